"""Numbers in the docs come from committed result files: the README's few-labels table is regenerated
from the results file its marker names (benchmarks/few_labels.py --markdown) and must match it; every
leaderboard is regenerated from its run directories, and a leaderboard row quoted in the docs is one of
its rows."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _few_labels():
    spec = importlib.util.spec_from_file_location("few_labels", ROOT / "benchmarks" / "few_labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_few_labels_table_is_its_results_file():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- few-labels-table: (\S+) -->\n(.*?)\n<!-- /few-labels-table -->", text, re.S)
    assert m, "README.md lost the few-labels table's markers (<!-- few-labels-table: RESULTS.json -->)"
    results = ROOT / m.group(1)
    assert results.is_file(), f"the README's table names {m.group(1)}, which is not committed"
    few = _few_labels()
    want = few.readme_tables(json.loads(results.read_text()))
    assert m.group(2).strip() == want, (
        "README's few-labels table differs from its results file; regenerate it "
        f"with: python benchmarks/few_labels.py --markdown {m.group(1)}"
    )


LEADERBOARDS = sorted((ROOT / "benchmarks" / "results").glob("*/leaderboard.md"))


@pytest.mark.parametrize("md", LEADERBOARDS, ids=[p.parent.name for p in LEADERBOARDS])
def test_each_leaderboard_is_its_run_directories(md):
    """leaderboard.md and .json hold what the run directories beside them give (their eval_*.json and
    summary.json, mean ± std over their seeds): no row edited by hand, none left behind by a rerun."""
    from selfsup.experiments.bench import COLUMNS, build_leaderboard, leaderboard_markdown

    board = build_leaderboard(md.parent)
    assert md.read_text() == leaderboard_markdown(board), (
        f"{md.relative_to(ROOT)} differs from its runs; rewrite it with selfsup bench (it skips finished runs)"
    )
    kept = {r["name"]: r for r in json.loads((md.parent / "leaderboard.json").read_text())["rows"]}
    assert set(kept) == {r["name"] for r in board["rows"]}
    for r in board["rows"]:
        for col, *_ in COLUMNS:
            assert kept[r["name"]][col] == pytest.approx(r[col], nan_ok=True), (r["name"], col)


def test_leaderboard_rows_quoted_in_the_docs_are_rows_of_a_leaderboard():
    """A leaderboard row copied into README.md or docs/ (| name | backbone | seeds done/seeds | ...) is,
    character for character, a row of one of the committed leaderboards."""
    rows = {line for md in LEADERBOARDS for line in md.read_text().splitlines() if line.startswith("| ")}
    row = re.compile(r"^\| [^|]+ \| [^|]+ \| \d+/\d+ \|")
    quoted = [
        (doc, line)
        for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
        for line in doc.read_text().splitlines()
        if row.match(line)
    ]
    assert quoted  # docs/benchmarks.md quotes the 15-minute leaderboard's top rows
    for doc, line in quoted:
        assert line in rows, f"{doc.relative_to(ROOT)} quotes a leaderboard row that no leaderboard has: {line}"


def test_method_pages_quote_their_leaderboard_rows():
    """A method page's 15-minute figures (kNN-200, kNN-20, linear after the row's folder or its name) are its
    row of benchmarks/results/fashion-mnist-15m/leaderboard.json, to the digit they are quoted at."""
    board = json.loads((ROOT / "benchmarks/results/fashion-mnist-15m/leaderboard.json").read_text())
    rows = {r["name"]: r for r in board["rows"]}
    figure = re.compile(
        r"(?:`benchmarks/results/fashion-mnist-15m/(\w+)/`\): |(\w+): )"
        r"kNN-200 ([\d.]+) %, kNN-20 ([\d.]+) %, linear ([\d.]+) %"
    )
    checked = 0
    for page in sorted((ROOT / "docs" / "methods").glob("*.md")):
        text = " ".join(page.read_text().split())  # figures wrap across lines
        for m in figure.finditer(text):
            folder, name = m.group(1), m.group(2)
            assert folder is None or folder in rows, f"{page.name} names a folder the leaderboard lacks: {folder}"
            if (folder or name) not in rows:
                continue
            row = rows[folder or name]
            for col, quoted in zip(("kNN-200", "kNN-20", "linear"), m.groups()[2:]):
                digits = len(quoted.partition(".")[2])
                assert float(quoted) == round(row[col], digits), (page.name, folder or name, col, quoted, row[col])
            checked += 1
    assert checked >= 12  # barlow, cmc, instdisc, invaspread, supcon, swav, vicreg, wmse, moco x2, mocov3 x2, ...

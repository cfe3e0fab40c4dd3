"""Numbers in the docs come from committed result files: the README's few-labels table is regenerated
from the results file its marker names (benchmarks/few_labels.py --markdown) and must match it."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

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
    assert m.group(2).strip() == want, ("README's few-labels table differs from its results file; regenerate it "
                                        f"with: python benchmarks/few_labels.py --markdown {m.group(1)}")

"""The HTML report: one self-contained file, escaped text, a comparison row per run, no crash on
half-finished runs. Run directories are faked from their files; nothing is trained."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from selfsup.report.html import _minutes, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=30)


def make_run(
    root: Path,
    name: str,
    method: str = "simclr",
    evals: bool = True,
    metrics: bool = True,
    data_name: str = "fashion-mnist",
    linear: float = 0.8834,
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    config = {
        "method": {"name": method, "temperature": 0.5},
        "data": {"name": data_name},
        "backbone": {"name": "resnet18", "width": 0.5},
        "train": {"epochs": 3},
        "out": str(d),
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics:
        rows = [
            {"step": s, "epoch": s // 10, "loss": 5.0 - s / 10, "lr": 0.1, "train_seconds": 6.0 * s, "progress": s / 30}
            for s in range(1, 31)
        ]
        rows += [
            {"step": s, "epoch": s // 10, "monitor/knn20_top1": 0.5 + s / 100, "diag/embedding_rank": 20.0 + s}
            for s in (10, 20, 30)
        ]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "summary.json").write_text(
            json.dumps(
                {
                    "steps": 30,
                    "epochs": 3.0,
                    "train_seconds": 180.0,
                    "monitor/knn20_top1": 0.8,
                    "diag/embedding_rank": 50.25,
                }
            )
        )
        _png(d / "curves.png")
    if evals:
        (d / "eval_knn.json").write_text(
            json.dumps({"protocol": "knn", "top1_k200": 0.8112, "top1_k20": 0.8255, "top1": 0.8112})
        )
        (d / "eval_linear.json").write_text(
            json.dumps({"protocol": "linear", "top1": linear, "l2": 1e-4, "val": {"1e-05": 0.87, "0.0001": 0.885}})
        )
        _png(d / "recon" / "epoch3.png")
    return d


def images(page: str) -> list[bytes]:
    """Every <img> src must be an inline PNG: its decoded bytes."""
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(srcs) == page.count("<img")
    out = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def comparison_rows(page: str) -> list[list[str]]:
    """Cells of the first table (the comparison / headline table), header excluded."""
    table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in table.split("<tr>")[2:]]


def test_report_is_one_self_contained_file_with_valid_pngs(tmp_path):
    run = make_run(tmp_path, "simclr-run")
    _png(run / "checkpoints" / "last" / "skip.png")  # not a picture of the run
    _png(run / "tb" / "skip.png")
    out = write_report([run], tmp_path / "out" / "report.html")
    assert out == tmp_path / "out" / "report.html" and out.is_file()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for external in ('src="http', "<link", "<script", "url(", "@import", "http://", "https://"):
        assert external not in page
    pngs = images(page)
    assert len(pngs) == 3  # fresh curves + curves.png + recon/epoch3.png; checkpoints/ and tb/ left out
    for data in pngs:
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.width > 0 and im.height > 0
    assert "curves.png</figcaption>" in page and "recon/epoch3.png</figcaption>" in page
    assert "skip.png" not in page
    assert "<details><summary>config.yaml</summary>" in page and "temperature: 0.5" in page
    assert "no evaluation yet" not in page and "no metrics.jsonl" not in page


def test_comparison_table_formats_eval_numbers(tmp_path):
    page = write_report([make_run(tmp_path, "a")], tmp_path / "r.html").read_text()
    [row] = comparison_rows(page)
    # run, method, data, backbone, epochs, train min, kNN-200, kNN-20, linear, NMI (no eval_cluster.json), rank
    assert row == ["a", "simclr", "fashion-mnist", "resnet18 ×0.5", "3.0", "3.0", "81.1", "82.5", "88.3", "—", "50.2"]
    # the per-eval table shows the nested validation grid, flattened
    assert "<td>val.0.0001</td>" in page and "0.885" in page


def test_effective_rank_prefers_the_diagnostics_evaluation(tmp_path):
    run = make_run(tmp_path, "a")
    (run / "eval_diagnostics.json").write_text(
        json.dumps({"protocol": "diagnostics", "embedding": {"effective_rank": 61.04, "std": [0.1] * 128}})
    )
    page = write_report([run], tmp_path / "r.html").read_text()
    assert comparison_rows(page)[0][-1] == "61.0"
    assert "<td>embedding.std</td><td>[0.1, 0.1," in page and "… (128 values)]" in page  # long lists shortened


def test_text_from_files_is_escaped(tmp_path):
    run = make_run(tmp_path, "x", data_name="<script>alert(1)</script>")
    (run / "eval_odd_<b>.json").write_text(json.dumps({"note": "<img src=x onerror=alert(1)>", "a&b": [1, 2]}))
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "<script" not in page and "<b>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # config text and the comparison cell
    assert comparison_rows(page)[0][2] == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "a&amp;b" in page


def test_two_runs_one_row_each_and_overlaid_curves(tmp_path):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", method="byol", evals=False)
    page = write_report([a, b], tmp_path / "r.html", title="two <runs>").read_text()
    rows = comparison_rows(page)
    assert [r[:2] for r in rows] == [["a", "simclr"], ["b", "byol"]]
    assert rows[0][8] == "88.3" and rows[1][6:10] == ["—"] * 4  # b has no eval files
    assert "<h1>two &lt;runs&gt;</h1>" in page and "<h2>Comparison</h2>" in page
    assert len(images(page)) == 1 + 3 + 2  # overlay + a's three + b's curves (fresh and curves.png)
    assert 'id="run-0"' in page and 'id="run-1"' in page


def test_same_named_runs_are_told_apart(tmp_path):
    a, b = make_run(tmp_path / "day1", "simclr"), make_run(tmp_path / "day2", "simclr")
    rows = comparison_rows(write_report([a, b], tmp_path / "r.html").read_text())
    assert [r[0] for r in rows] == ["day1/simclr", "day2/simclr"]


def test_run_without_evals_or_metrics_still_renders_with_notes(tmp_path):
    run = make_run(tmp_path, "fresh", evals=False, metrics=False)
    page = write_report([str(run)], tmp_path / "r.html").read_text()
    assert "no evaluation yet: run <code>selfsup eval knn" in page
    assert "no metrics.jsonl" in page and "no summary.json" in page and "no pictures" in page
    assert comparison_rows(page)[0][4:] == ["—"] * 7
    assert images(page) == []


def test_half_written_files_do_not_crash(tmp_path):
    run = make_run(tmp_path, "live")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "loss"')  # the training process is mid-write
    (run / "eval_semi.json").write_text("{not json")
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "metrics.jsonl has unreadable lines" in page and "eval_semi.json could not be read" in page
    assert len(images(page)) == 3


def test_monitor_rows_get_the_time_of_the_steps_around_them():
    rows = [
        {"step": 10, "train_seconds": 60.0},
        {"step": 15, "monitor/knn20_top1": 0.5},
        {"step": 20, "train_seconds": 120.0},
    ]
    assert _minutes(rows) == ([1.0, 1.5, 2.0], "training minutes")
    assert _minutes([{"step": 3, "loss": 1.0}]) == ([3], "step")


def test_not_a_run_directory_raises_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="no config.yaml.*selfsup pretrain"):
        write_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(ValueError, match="no run directories"):
        write_report([], tmp_path / "r.html")


def _chromium() -> str:
    """Debian's chromium, installed here when missing (as root); otherwise skip with the reason."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and this user cannot apt-get install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        res = subprocess.run(install, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"chromium could not be installed: {res.stderr[-300:]}")
    return shutil.which("chromium")


@pytest.mark.slow
def test_every_image_loads_in_headless_chromium(tmp_path):
    chromium = _chromium()
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    page = write_report([a, b], tmp_path / "r.html").read_text()
    n = len(images(page))
    # a copy of the page with a probe: after load, mark <body> with how many images decoded
    probe = (
        "<script>addEventListener('load', () => { const im = [...document.images];"
        " const ok = im.filter(i => i.complete && i.naturalWidth > 0);"
        " document.body.dataset.loaded = ok.length + '/' + im.length; });</script>"
    )
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>"))
    res = subprocess.run(
        [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={tmp_path / 'p'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (tmp_path / "probe.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    marker = re.search(r'data-loaded="(\d+)/(\d+)"', res.stdout)
    assert marker, f"no probe result from chromium (rc {res.returncode}): {res.stderr[-500:]}"
    assert marker.groups() == (str(n), str(n)) and n == 1 + 2 * 3

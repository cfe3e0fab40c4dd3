"""The flat table of each benchmark folder (selfsup.experiments.table): every folder of committed runs has its
runs.csv and it is exactly what the runs say (a table never drifts from its runs), and a row's identity —
recipe hash, commit, seed — is read right."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from selfsup.experiments.table import recipe_hash, run_row, runs_of, table_csv

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
FOLDERS = sorted(p for p in RESULTS.iterdir() if p.is_dir() and runs_of(p))


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_every_committed_table_is_its_runs(folder: Path):
    table = folder / "runs.csv"
    assert table.is_file(), f"regenerate it: python -m selfsup.experiments.table {folder}"
    assert table.read_text() == table_csv(folder), f"stale: python -m selfsup.experiments.table {folder}"
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert len(rows) == len(runs_of(folder)) and all(r["recipe"] and r["commit"] for r in rows)


def _run(root: Path, name: str, seed: int, lr: float, commit: str | None) -> Path:
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = {
        "method": {"name": "simclr"},
        "backbone": {"name": "resnet10", "width": 0.75},
        "data": {"name": "digits", "dir": f"/somewhere/{seed}"},
        "optim": {"lr": lr},
        "train": {"seed": seed, "device": "cpu", "budget": "3m"},
        "out": f"/runs/{name}/seed{seed}",  # each seed's own directory
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "summary.json").write_text(json.dumps({"train_seconds": 180.0, "steps": 400}))
    (run / "eval_linear.json").write_text(json.dumps({"top1": 0.8765}))
    if commit:
        (run / "provenance.json").write_text(
            json.dumps({"commit": commit, "machine": "x86_64", "cpus": 2, "date": "2026-12-07T04:00:00+00:00"})
        )
    return run


def test_a_row_says_what_made_it_and_what_it_measured(tmp_path: Path):
    a0, a1 = _run(tmp_path, "a", 0, 0.3, "abc1234"), _run(tmp_path, "a", 1, 0.3, None)
    b0 = _run(tmp_path, "b", 0, 0.6, "abc1234")
    (a0 / "claim_x.json").write_text(json.dumps({"measured": {"embedding_rank": 12.5}}))
    r0, r1, rb = (run_row(r, tmp_path) for r in (a0, a1, b0))
    assert r0["recipe"] == r1["recipe"] != rb["recipe"]  # the seed and data dir are not the recipe; the lr is
    assert (r0["run"], r0["seed"], r0["commit"], r0["machine"], r0["date"]) == (
        "a/seed0",
        0,
        "abc1234",
        "x86_64, 2 cpus",
        "2026-12-07",
    )
    assert r1["commit"] == "unrecorded" and r0["linear"] == 87.65 and r0["embedding_rank"] == 12.5
    (a1.parent / "seed2.previous").mkdir()  # a retired run is not a row
    (a1.parent / "seed2.previous" / "config.yaml").write_text((a1 / "config.yaml").read_text())
    rows = list(csv.DictReader(io.StringIO(table_csv(tmp_path))))
    assert [r["run"] for r in rows] == ["a/seed0", "a/seed1", "b/seed0"]
    assert rows[1]["embedding_rank"] == "" and rows[0]["embedding_rank"] == "12.5"


def test_the_recipe_hash_is_stable():
    cfg = {"method": {"name": "simclr"}, "train": {"seed": 0, "epochs": 1}}
    assert recipe_hash(cfg) == recipe_hash({"train": {"epochs": 1, "seed": 5}, "method": {"name": "simclr"}})
    assert recipe_hash(cfg) != recipe_hash({"method": {"name": "simclr"}, "train": {"seed": 0, "epochs": 2}})

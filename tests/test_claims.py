"""`selfsup claims` end to end on digits with a tiny budget: runs shared between claims, verdicts from
the rules, docs page written, and a second call that trains nothing."""
from __future__ import annotations

import json

import pytest

from selfsup.claims import claims_by_name
from selfsup.claims.harness import compare, verdict_from
from selfsup.cli import main


def test_compare_counts_a_difference_only_above_the_spread():
    assert compare([80.0], [78.0], margin=1.0) == ("higher", 2.0)
    assert compare([80.0], [79.5], margin=1.0)[0] == "tie"
    assert compare([80, 84, 76], [78, 78.5, 77.5], margin=1.0)[0] == "tie"  # 2 points, but a 4-point spread
    assert compare([80, 80.5, 79.5], [78, 78.5, 77.5], margin=1.0)[0] == "higher"
    assert verdict_from("tie").startswith("inconclusive") and verdict_from("lower") == "does not hold"


def test_all_fifteen_claims_are_listed(capsys):
    assert len(claims_by_name()) == 15
    assert main(["claims", "--list"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 15
    with pytest.raises(ValueError, match="unknown claim"):
        claims_by_name(["nope"])


def test_claims_end_to_end_on_digits(tmp_path, capsys):
    out, doc = tmp_path / "claims", tmp_path / "claims.md"
    argv = ["claims", "--only", "projection-head,contrastive-vs-reconstruction", "--data", "digits",
            "--budget-per-run", "4s", "--out", str(out), "--doc", str(doc), "backbone.width=0.25",
            "train.monitor_train=0"]
    assert main(argv) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 2 and runs[0].startswith("ae-") and runs[1].startswith("simclr-")  # simclr's run is shared
    page = doc.read_text()
    assert "## projection-head:" in page and "## contrastive-vs-reconstruction:" in page
    assert "selfsup pretrain --method simclr --data digits --budget 4s" in page  # the exact commands
    for name in ("projection-head", "contrastive-vs-reconstruction"):
        verdict = page.split(f"## {name}: ")[1].split("\n")[0]
        assert verdict in ("holds", "does not hold", "inconclusive at this scale")
    measured = json.loads(next((out / "runs").glob("simclr-*/seed0/claim_projection-head.json")).read_text())
    assert set(measured) == {"linear_h", "linear_z"} and 10 < measured["linear_h"] <= 100
    stamp = next((out / "runs").glob("simclr-*/seed0/summary.json")).stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # resumes: nothing is trained or measured again
    assert next((out / "runs").glob("simclr-*/seed0/summary.json")).stat().st_mtime_ns == stamp
    assert "training" not in capsys.readouterr().out

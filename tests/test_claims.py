"""`selfsup claims` end to end on digits with a tiny budget: runs shared between claims, verdicts from
the rules, docs page written, and a second call that trains nothing."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from selfsup.claims import claims_by_name
from selfsup.claims import experiment
from selfsup.claims.experiment import Arm, arm_key, compare, verdict_from
from selfsup.cli import main


def test_compare_counts_a_difference_only_above_the_spread():
    assert compare([80.0], [78.0], margin=1.0) == ("higher", 2.0)
    assert compare([80.0], [79.5], margin=1.0)[0] == "tie"
    assert compare([80, 84, 76], [78, 78.5, 77.5], margin=1.0)[0] == "tie"  # 2 points, but a 4-point spread
    assert compare([80, 80.5, 79.5], [78, 78.5, 77.5], margin=1.0)[0] == "higher"
    assert verdict_from("tie").startswith("inconclusive") and verdict_from("lower") == "does not hold"


def _decide(name, per_arm):
    return claims_by_name([name])[0].decide({a: [m] for a, m in per_arm.items()})[0]


def test_the_rules_decide_from_hand_made_numbers():
    # DINO: each ablation collapses in its own mode, read from the teacher's entropy (not the embedding's rank)
    dino = {"dino": {"embedding_rank": 30, "teacher_entropy": 5.0, "log_K": 6.93},
            "no_centering": {"embedding_rank": 6, "teacher_entropy": 0.0, "log_K": 6.93},
            "no_sharpening": {"embedding_rank": 8.4, "teacher_entropy": 6.9, "log_K": 6.93}}
    assert _decide("dino-centering-sharpening", dino) == "holds"
    dino["no_sharpening"]["teacher_entropy"] = 4.0  # collapsed, but not to the uniform output
    assert _decide("dino-centering-sharpening", dino) == "does not hold"
    # BYOL: no BN collapses (rank); GN + WS trains when its probe is within the margin of BN's
    byol = {"byol": {"embedding_rank": 32, "linear": 84.3}, "byol_no_bn": {"embedding_rank": 3.7, "linear": 80.5},
            "byol_gn_ws": {"embedding_rank": 14, "linear": 83.6}}
    assert _decide("byol-needs-bn", byol) == "holds"
    byol["byol_gn_ws"]["linear"] = 81.0
    assert _decide("byol-needs-bn", byol) == "does not hold"
    # more negatives: the probe must rise from batch 64 to 512; the bound is reported beside it
    neg = {f"b{n}": {"linear": 85 + i, "bound_N32": 2.9, "bound_N512": 3.5 + i / 10}
           for i, n in enumerate((64, 128, 256, 512))}
    assert _decide("more-negatives", neg) == "holds"
    neg["b512"]["linear"] = 83.0  # 2 points below b64: lower, beyond the margin
    assert _decide("more-negatives", neg) == "does not hold"
    # MoCo's queue: at batch 64 it must match SimCLR at 512 (within the one-seed margin)
    queue = {"mocov2_b64": {"linear": 85.0}, "simclr_b64": {"linear": 83.0}, "simclr_b512": {"linear": 85.5}}
    assert _decide("queue-decouples", queue) == "holds"
    queue["simclr_b512"]["linear"] = 88.0
    assert _decide("queue-decouples", queue) == "does not hold"
    # augmentations: removing crop or colour must cost more than removing blur
    aug = {"all": {"linear": 80}, "no_crop": {"linear": 60}, "no_colour": {"linear": 70}, "no_blur": {"linear": 79}}
    assert _decide("augmentations", aug) == "holds"
    aug["no_colour"]["linear"] = 79.5
    assert _decide("augmentations", aug) == "does not hold"
    # label efficiency: a gap at 1 % that shrinks by 100 %
    le = {"rotation": {"pretrained_1pct": 60, "scratch_1pct": 40, "pretrained_10pct": 75, "scratch_10pct": 70,
                       "pretrained_100pct": 85, "scratch_100pct": 88}}
    assert _decide("label-efficiency", le) == "holds"
    le["rotation"]["scratch_1pct"] = 65
    assert _decide("label-efficiency", le) == "does not hold"


def test_arms_that_resolve_to_the_same_run_share_it():
    # the digits recipe trains SimCLR at batch 128: restating it is the same run, changing it is another
    base = arm_key(Arm("simclr", "simclr"), "digits", "4s")
    assert arm_key(Arm("b128", "simclr", ("train.batch_size=128",)), "digits", "4s") == base
    assert arm_key(Arm("b64", "simclr", ("train.batch_size=64",)), "digits", "4s") != base
    assert arm_key(Arm("simclr", "simclr"), "digits", "8s") != base  # another budget is another run
    assert arm_key(Arm("simclr", "simclr"), "fashion-mnist", "4s") != base
    # a data set with no recipe of its own borrows another's (else: the generic defaults' full ResNet-18)
    tinted = Arm("t", "simclr", data="tinted-digits", recipe_of="digits")
    assert tinted.entry().config.endswith("recipes/simclr_digits.yaml")
    assert arm_key(tinted, "digits", "4s") != arm_key(Arm("t", "simclr", data="tinted-digits"), "digits", "4s")
    with pytest.raises(ValueError, match="no recipe"):
        Arm("t", "simclr", recipe_of="nope").entry()


def test_a_config_field_added_at_its_default_keeps_every_run_key(monkeypatch):
    # finished claim runs are found by key: a new field whose default keeps the old behaviour (as
    # views.weak or DINO's koleo_weight were) must not send every claim back to training
    arms = [Arm("simclr", "simclr"), Arm("b64", "simclr", ("train.batch_size=64",)), Arm("mae", "mae")]
    before = [arm_key(a, "digits", "4s") for a in arms]
    real = experiment.to_dict

    def with_a_new_field(obj):
        d = real(obj)
        if isinstance(d, dict) and "train" in d:
            d["train"]["new_switch"] = False
        return d
    monkeypatch.setattr(experiment, "to_dict", with_a_new_field)
    assert [arm_key(a, "digits", "4s") for a in arms] == before
    assert len(set(before)) == 3


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
    # each verdict on the page is its rule applied to the numbers measured in the runs (read back from
    # every arm's claim_<name>.json), whichever way the tiny budget makes it fall
    from selfsup.claims.harness import run_claims

    results = run_claims(claims_by_name(["projection-head", "contrastive-vs-reconstruction"]), out, "digits", "4s",
                         progress_bar=False, extra_overrides=("backbone.width=0.25", "train.monitor_train=0"))
    for name, res in results.items():
        claim = claims_by_name([name])[0]  # here every arm is its own method, so a run is found by its method
        arms = {a.name: [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"{a.method}-*/seed*/"
                                                                                          f"claim_{name}.json"))]
                for a in claim.arms}
        assert arms == res["arms"] and all(len(v) == 1 for v in arms.values())
        verdict = page.split(f"## {name}: ")[1].split("\n")[0]
        assert verdict == res["verdict"] == claim.decide(arms)[0]
        assert verdict in ("holds", "does not hold") or verdict.startswith("inconclusive")
    refs = json.loads((out / "references.json").read_text())  # the no-pretraining rows every table is read against
    assert set(refs) == {"digits: raw pixels", "digits: random-init convnet x0.25"}
    assert all(10 < v <= 100 for v in refs.values()) and "digits: random-init convnet x0.25" in page
    measured = json.loads(next((out / "runs").glob("simclr-*/seed0/claim_projection-head.json")).read_text())
    assert set(measured) == {"linear_h", "linear_z"} and 10 < measured["linear_h"] <= 100
    stamp = next((out / "runs").glob("simclr-*/seed0/summary.json")).stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # resumes: nothing is trained or measured again
    assert next((out / "runs").glob("simclr-*/seed0/summary.json")).stat().st_mtime_ns == stamp
    assert "training" not in capsys.readouterr().out
    assert "## label-efficiency: not yet run" in page and "13 not yet run" in page  # the page lists every claim
    # a later call on one claim rewrites the page with everything measured so far, not only that claim
    assert main([*argv[:2], "projection-head", *argv[3:]]) == 0
    again = doc.read_text()
    assert "## contrastive-vs-reconstruction: not yet run" not in again and "## contrastive-vs-reconstruction: " in again
    # a fresh checkout has a run's numbers but not its (git-ignored) weights: a claim that needs them retires
    # the run to seed0.previous, trains the arm again, and says which claims measured the retired run
    sim = next((out / "runs").glob("simclr-*/seed0"))
    shutil.rmtree(sim / "checkpoints")
    (sim / "claim_projection-head.json").unlink()
    capsys.readouterr()
    assert main([*argv[:2], "projection-head", *argv[3:]]) == 0
    said = capsys.readouterr().out
    assert "weights are not on this machine" in said and "--only contrastive-vs-reconstruction" in said
    assert (sim.with_name("seed0.previous") / "claim_contrastive-vs-reconstruction.json").is_file()  # nothing lost
    assert (sim / "checkpoints" / "last" / "model.safetensors").is_file() and (sim / "claim_projection-head.json").is_file()
    assert "## contrastive-vs-reconstruction: not yet run" in doc.read_text()  # its simclr arm is a new run now


def test_claims_with_two_seeds_show_the_spread(tmp_path):
    out, doc = tmp_path / "claims", tmp_path / "claims.md"
    assert main(["claims", "--only", "projection-head", "--data", "digits", "--budget-per-run", "3s", "--seeds", "2",
                 "--out", str(out), "--doc", str(doc), "backbone.width=0.25", "train.monitor_train=0"]) == 0
    (run,) = (out / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["seed0", "seed1"]
    assert [yaml.safe_load((run / s / "config.yaml").read_text())["train"]["seed"] for s in ("seed0", "seed1")] == [0, 1]
    h = [json.loads((run / s / "claim_projection-head.json").read_text())["linear_h"] for s in ("seed0", "seed1")]
    page = doc.read_text()
    assert "2 seed(s) per arm" in page and "twice the larger spread" in page
    section = page.split("## projection-head:")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| simclr |"))
    assert f"{(h[0] + h[1]) / 2:.3g} ± " in row  # mean ± std over the two seeds

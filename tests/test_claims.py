"""`selfsup claims` end to end on digits with a tiny budget: runs shared between claims, verdicts from
the rules, docs page written, and a second call that trains nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml

from selfsup.experiments.claims import claims_by_name
from selfsup.experiments.claims import experiment
from selfsup.experiments.claims.experiment import Arm, arm_key
from selfsup.experiments.claims.rules import FAILS, HOLDS, INCONCLUSIVE, All, Diff
from selfsup.cli import main


def test_a_difference_counts_only_above_the_margin_and_the_spread():
    one = {"a": [{"x": 80.0}], "b": [{"x": 78.0}]}
    assert Diff("a", "x", "b").judge(one, 1.0)[0] == HOLDS  # 2 points, one seed: the margin alone
    assert Diff("a", "x", "b").judge(one, 3.0)[0] == INCONCLUSIVE  # under a 3-point margin
    assert Diff("b", "x", "a").judge(one, 1.0)[0] == FAILS  # b is 2 points below a: beyond the margin
    wide = {"a": [{"x": v} for v in (80, 84, 76)], "b": [{"x": v} for v in (78, 78.5, 77.5)]}
    assert Diff("a", "x", "b").judge(wide, 1.0)[0] == INCONCLUSIVE  # 2 points, but a spread of 2 x 4 = 8
    tight = {"a": [{"x": v} for v in (80, 80.5, 79.5)], "b": [{"x": v} for v in (78, 78.5, 77.5)]}
    verdict, reading = Diff("a", "x", "b").judge(tight, 1.0)
    assert verdict == HOLDS and "= +2" in reading and "spread 1" in reading  # 2 x the sample std 0.5
    assert Diff("a", "x", "b", expect="lower").judge(tight, 1.0)[0] == FAILS
    assert Diff("b", "x", "a", expect="lower").judge(tight, 1.0)[0] == HOLDS


def test_not_lower_and_same_count_the_spread_against_the_claim():
    def arms(a, b):
        return {"a": [{"x": v} for v in a], "b": [{"x": v} for v in b]}

    # a is 0.5 below b: within a 1-point margin with tight seeds; beyond it once the spread is counted
    assert Diff("a", "x", "b", expect="not_lower").judge(arms([79.5] * 3, [80] * 3), 1.0)[0] == HOLDS
    assert Diff("a", "x", "b", expect="not_lower").judge(arms([79, 79.5, 80], [80] * 3), 1.0)[0] == INCONCLUSIVE
    assert Diff("a", "x", "b", expect="not_lower").judge(arms([77] * 3, [80] * 3), 1.0)[0] == FAILS
    assert Diff("a", "x", "b", expect="same").judge(arms([80.4] * 3, [80] * 3), 1.0)[0] == HOLDS
    assert Diff("a", "x", "b", expect="same").judge(arms([81.5] * 3, [80] * 3), 1.0)[0] == FAILS
    assert Diff("a", "x", "b", expect="same").judge(arms([80, 80.5, 81], [80] * 3), 1.0)[0] == INCONCLUSIVE


def test_a_ratio_a_constant_and_all_of_several():
    per_arm = {"a": [{"rank": 5.0, "ent": 6.5, "logk": 7.0}] * 2, "b": [{"rank": 30.0}, {"rank": 34.0}]}
    # 5 below 0.25 x 32 = 8 by more than twice the scaled std (0.25 x 2.83 x 2 = 1.41): holds
    verdict, reading = Diff("a", "rank", "b", expect="lower", factor=0.25, margin=0.0).judge(per_arm, 1.0)
    assert verdict == HOLDS and "a's rank 5 − 0.25 x b's rank 32 (= 8) = -3" in reading  # b's value, then scaled
    assert Diff("a", "ent", b_key="logk", factor=0.9, margin=0.0).judge(per_arm, 1.0)[0] == HOLDS  # 6.5 > 6.3
    assert Diff("a", "ent", const=7.0, margin=0.0).judge(per_arm, 1.0)[0] == FAILS
    yes, no, unsure = (Diff("a", "ent", const=c, margin=0.2) for c in (6.0, 7.0, 6.4))
    assert All(yes, yes).judge(per_arm, 1.0)[0] == HOLDS
    assert All(yes, unsure).judge(per_arm, 1.0)[0] == INCONCLUSIVE
    assert All(unsure, no).judge(per_arm, 1.0)[0] == FAILS
    verdict, why = Diff("a", "nope", "b").judge(per_arm, 1.0)  # a number the measure does not give
    assert verdict == INCONCLUSIVE and "a's nope and b's nope not measured" in why
    with pytest.raises(ValueError, match="expect"):
        Diff("a", "x", "b", expect="bigger")
    with pytest.raises(ValueError, match="not both"):
        Diff("a", "x", "b", const=1.0)


def _seeds(numbers: dict[str, dict[str, float]], spread: float = 0.1) -> dict[str, list[dict]]:
    """Three seeds per arm around the given means (± spread)."""
    return {arm: [{k: v + d for k, v in m.items()} for d in (-spread, 0.0, spread)] for arm, m in numbers.items()}


# per claim: means for which its rule holds, then a change of some of them for which it does not hold
# (beyond the margin and the spread) and one for which it is inconclusive (inside them)
CASES = {
    "label-efficiency": (
        {"rotation": {"gap_1pct": 10.0, "gap_100pct": -2.0}},
        {"rotation": {"gap_1pct": -3.0, "gap_100pct": -2.0}},
        {"rotation": {"gap_1pct": 0.5, "gap_100pct": -2.0}},
    ),
    "finetune-vs-linear": (
        {"simclr": {"gain": 2.0}, "mae": {"gain": 6.0}, "rotation": {"gain": 3.0}},
        {"simclr": {"gain": 2.0}, "mae": {"gain": -3.0}, "rotation": {"gain": 3.0}},
        {"simclr": {"gain": 2.0}, "mae": {"gain": 3.5}, "rotation": {"gain": 3.0}},
    ),
    "more-negatives": (
        {
            "b64": {"linear": 85.0, "bound_N512": 3.4},
            "b128": {},
            "b256": {},
            "b512": {"linear": 87.0, "bound_N512": 3.8},
        },
        {
            "b64": {"linear": 88.0, "bound_N512": 3.4},
            "b128": {},
            "b256": {},
            "b512": {"linear": 86.0, "bound_N512": 3.8},
        },
        {
            "b64": {"linear": 86.5, "bound_N512": 3.4},
            "b128": {},
            "b256": {},
            "b512": {"linear": 87.0, "bound_N512": 3.8},
        },
    ),
    "queue-decouples": (
        {"mocov2_b64": {"linear": 85.0}, "simclr_b64": {"linear": 83.0}, "simclr_b512": {"linear": 85.3}},
        {"mocov2_b64": {"linear": 85.0}, "simclr_b64": {"linear": 83.0}, "simclr_b512": {"linear": 88.0}},
        {"mocov2_b64": {"linear": 85.0}, "simclr_b64": {"linear": 83.0}, "simclr_b512": {"linear": 85.9}},
    ),
    "projection-head": (
        {"simclr": {"linear_h": 88.0, "linear_z": 80.0}},
        {"simclr": {"linear_h": 78.0, "linear_z": 80.0}},
        {"simclr": {"linear_h": 80.5, "linear_z": 80.0}},
    ),
    "augmentations": (
        {
            "all": {"linear": 80.0},
            "no_crop": {"linear": 60.0},
            "no_colour": {"linear": 70.0},
            "no_blur": {"linear": 79.5},
        },
        {
            "all": {"linear": 80.0},
            "no_crop": {"linear": 60.0},
            "no_colour": {"linear": 82.0},
            "no_blur": {"linear": 79.5},
        },
        {
            "all": {"linear": 80.0},
            "no_crop": {"linear": 60.0},
            "no_colour": {"linear": 79.0},
            "no_blur": {"linear": 79.5},
        },
    ),
    "byol-needs-bn": (
        {
            "byol": {"embedding_rank": 32.0, "linear": 84.0},
            "byol_no_bn": {"embedding_rank": 3.7, "linear": 78.0},
            "byol_gn_ws": {"embedding_rank": 14.0, "linear": 83.6},
        },
        {
            "byol": {"embedding_rank": 32.0, "linear": 84.0},
            "byol_no_bn": {"embedding_rank": 3.7, "linear": 78.0},
            "byol_gn_ws": {"embedding_rank": 14.0, "linear": 81.0},
        },
        {
            "byol": {"embedding_rank": 32.0, "linear": 84.0},
            "byol_no_bn": {"embedding_rank": 3.7, "linear": 83.5},
            "byol_gn_ws": {"embedding_rank": 14.0, "linear": 83.6},
        },
    ),
    "simsiam-stop-gradient": (
        {
            "simsiam": {"embedding_rank": 100.0, "linear": 85.0},
            "no_stop_gradient": {"embedding_rank": 2.0, "linear": 70.0},
        },
        {
            "simsiam": {"embedding_rank": 100.0, "linear": 85.0},
            "no_stop_gradient": {"embedding_rank": 2.0, "linear": 87.0},
        },
        {
            "simsiam": {"embedding_rank": 100.0, "linear": 85.0},
            "no_stop_gradient": {"embedding_rank": 2.0, "linear": 84.5},
        },
    ),
    "dino-centering-sharpening": (
        {
            "dino": {"teacher_entropy": 5.0, "log_K": 6.93},
            "no_centering": {"teacher_entropy": 0.0, "log_K": 6.93},
            "no_sharpening": {"teacher_entropy": 6.9, "log_K": 6.93},
        },
        {
            "dino": {"teacher_entropy": 5.0, "log_K": 6.93},
            "no_centering": {"teacher_entropy": 0.0, "log_K": 6.93},
            "no_sharpening": {"teacher_entropy": 4.0, "log_K": 6.93},
        },
        {
            "dino": {"teacher_entropy": 5.0, "log_K": 6.93},
            "no_centering": {"teacher_entropy": 0.0, "log_K": 6.93},
            "no_sharpening": {"teacher_entropy": 6.27, "log_K": 6.93},
        },
    ),
    "moco-momentum": (
        {"m0.99": {"linear": 86.0}, "m0": {"linear": 80.0}},
        {"m0.99": {"linear": 80.0}, "m0": {"linear": 86.0}},
        {"m0.99": {"linear": 86.0}, "m0": {"linear": 85.5}},
    ),
    "mae-mask-ratio": (
        {"mask25": {"linear": 78.0}, "mask50": {"linear": 80.0}, "mask75": {"linear": 82.0}},
        {"mask25": {"linear": 78.0}, "mask50": {"linear": 84.0}, "mask75": {"linear": 82.0}},
        {"mask25": {"linear": 78.0}, "mask50": {"linear": 81.5}, "mask75": {"linear": 82.0}},
    ),
    "multi-crop": (
        {"swav_2x": {"linear": 84.0}, "swav_2x+6": {"linear": 86.0}},
        {"swav_2x": {"linear": 86.0}, "swav_2x+6": {"linear": 84.0}},
        {"swav_2x": {"linear": 85.5}, "swav_2x+6": {"linear": 86.0}},
    ),
    "contrastive-vs-reconstruction": (
        {"simclr": {"linear": 87.0}, "ae": {"linear": 84.0}},
        {"simclr": {"linear": 82.0}, "ae": {"linear": 84.0}},
        {"simclr": {"linear": 84.5}, "ae": {"linear": 84.0}},
    ),
    "pretext-is-task-specific": (
        {"rotation": {"drop": 20.0}, "simclr": {"drop": 10.0}},
        {"rotation": {"drop": 5.0}, "simclr": {"drop": 10.0}},
        {"rotation": {"drop": 10.8}, "simclr": {"drop": 10.0}},
    ),
    "clip-zero-shot": (
        {"clip": {"zero_shot": 60.0, "1_shot": 45.0, "16_shot": 75.0}},
        {"clip": {"zero_shot": 40.0, "1_shot": 45.0, "16_shot": 75.0}},
        {"clip": {"zero_shot": 45.5, "1_shot": 45.0, "16_shot": 75.0}},
    ),
}


def test_every_claim_has_cases_for_each_verdict():
    assert set(CASES) == {c.name for c in claims_by_name()}


@pytest.mark.parametrize("name", list(CASES))
def test_each_rule_holds_fails_and_is_inconclusive_on_hand_made_numbers(name):
    (claim,) = claims_by_name([name])
    holds, fails, unsure = (_seeds(numbers) for numbers in CASES[name])
    assert claim.decide(holds)[0] == HOLDS, claim.decide(holds)[1]
    assert claim.decide(fails)[0] == FAILS, claim.decide(fails)[1]
    assert claim.decide(unsure)[0] == INCONCLUSIVE, claim.decide(unsure)[1]
    # wide seeds make a clear difference inconclusive
    assert claim.decide(_seeds(CASES[name][0], spread=30.0))[0] == INCONCLUSIVE
    # fewer seeds than registered: at most inconclusive, and the reason says so
    one = {a: runs[1:2] for a, runs in holds.items()}
    verdict, why = claim.decide(one)
    assert verdict == INCONCLUSIVE and f"1 of the {claim.seeds} registered seeds" in why and "say: holds" in why


def test_a_claims_rule_is_registered_with_its_settings():
    c = claims_by_name(["moco-momentum"])[0]
    assert c.seeds >= 3 and c.margin == 1.0
    assert "m0.99's linear above m0's linear by more than max(1 point, twice the larger std)" in c.describe()
    before = c.fingerprint()
    assert dataclasses.replace(c, margin=2.0).fingerprint() != before
    assert dataclasses.replace(c, seeds=5).fingerprint() != before
    assert dataclasses.replace(c, rule=Diff("m0", "linear", "m0.99", expect="lower")).fingerprint() != before
    assert dataclasses.replace(c, history=("an edit to the page",)).fingerprint() == before  # not a setting
    assert len({x.fingerprint() for x in claims_by_name()}) == 15


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
    argv = [
        "claims",
        "--only",
        "projection-head,contrastive-vs-reconstruction",
        "--data",
        "digits",
        "--budget-per-run",
        "4s",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--doc",
        str(doc),
        "backbone.width=0.25",
        "train.monitor_train=0",
    ]
    assert main(argv) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 2 and runs[0].startswith("ae-") and runs[1].startswith("simclr-")  # simclr's run is shared
    page = doc.read_text()
    assert "## projection-head:" in page and "## contrastive-vs-reconstruction:" in page
    assert "selfsup pretrain --method simclr --data digits --budget 4s" in page  # the exact commands
    # each verdict on the page is its rule applied to the numbers measured in the runs (read back from
    # every arm's claim_<name>.json), whichever way the tiny budget makes it fall
    from selfsup.experiments.claims.harness import run_claims

    results = run_claims(
        claims_by_name(["projection-head", "contrastive-vs-reconstruction"]),
        out,
        "digits",
        "4s",
        seeds=1,
        progress_bar=False,
        extra_overrides=("backbone.width=0.25", "train.monitor_train=0"),
    )
    for name, res in results.items():
        claim = claims_by_name([name])[0]  # here every arm is its own method, so a run is found by its method
        arms = {
            a.name: [
                json.loads(p.read_text())["measured"]
                for p in sorted((out / "runs").glob(f"{a.method}-*/seed*/claim_{name}.json"))
            ]
            for a in claim.arms
        }
        assert arms == res["arms"] and all(len(v) == 1 for v in arms.values())
        verdict = page.split(f"## {name}: ")[1].split("\n")[0]
        assert verdict == res["verdict"] == claim.decide(arms)[0]
        assert verdict == INCONCLUSIVE and "1 of the 3 registered seeds" in res["reason"]  # one seed of three
        assert f"**Rule** (fingerprint {claim.fingerprint()}). Holds when {claim.describe()}" in page
    refs = json.loads((out / "references.json").read_text())  # the no-pretraining rows every table is read against
    assert set(refs) == {"digits: raw pixels", "digits: random-init convnet x0.25"}
    assert all(10 < v <= 100 for v in refs.values()) and "digits: random-init convnet x0.25" in page
    cached = json.loads(next((out / "runs").glob("simclr-*/seed0/claim_projection-head.json")).read_text())
    measured = cached["measured"]
    assert set(measured) == {"linear_h", "linear_z"} and 10 < measured["linear_h"] <= 100
    assert cached["fingerprint"] == claims_by_name(["projection-head"])[0].fingerprint() and cached["seconds"] > 0
    assert "minutes of training" in page
    stamp = next((out / "runs").glob("simclr-*/seed0/summary.json")).stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # resumes: nothing is trained or measured again
    assert next((out / "runs").glob("simclr-*/seed0/summary.json")).stat().st_mtime_ns == stamp
    assert "training" not in capsys.readouterr().out
    assert "## label-efficiency: not yet run" in page and "13 not yet run" in page  # the page lists every claim
    # a later call on one claim rewrites the page with everything measured so far, not only that claim
    assert main([*argv[:2], "projection-head", *argv[3:]]) == 0
    again = doc.read_text()
    assert (
        "## contrastive-vs-reconstruction: not yet run" not in again and "## contrastive-vs-reconstruction: " in again
    )
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
    assert (sim / "checkpoints" / "last" / "model.safetensors").is_file() and (
        sim / "claim_projection-head.json"
    ).is_file()
    assert "## contrastive-vs-reconstruction: not yet run" in doc.read_text()  # its simclr arm is a new run now


def test_claims_with_two_seeds_show_the_spread_and_every_seed(tmp_path):
    out, doc = tmp_path / "claims", tmp_path / "claims.md"
    assert (
        main(
            [
                "claims",
                "--only",
                "projection-head",
                "--data",
                "digits",
                "--budget-per-run",
                "3s",
                "--seeds",
                "2",
                "--out",
                str(out),
                "--doc",
                str(doc),
                "backbone.width=0.25",
                "train.monitor_train=0",
            ]
        )
        == 0
    )
    (run,) = (out / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["seed0", "seed1"]
    assert [yaml.safe_load((run / s / "config.yaml").read_text())["train"]["seed"] for s in ("seed0", "seed1")] == [
        0,
        1,
    ]
    h = [
        json.loads((run / s / "claim_projection-head.json").read_text())["measured"]["linear_h"]
        for s in ("seed0", "seed1")
    ]
    page = doc.read_text()
    assert "twice the larger std over the seeds" in page
    section = page.split("## projection-head:")[1].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| simclr |"))
    assert f"{(h[0] + h[1]) / 2:.3g} ± " in row and f"({h[0]:.3g}, {h[1]:.3g})" in row  # mean ± std, each seed


def test_a_rule_changed_after_its_runs_cannot_reuse_them(tmp_path, capsys):
    from selfsup.experiments.claims.harness import RuleChanged, run_claims

    out = tmp_path / "claims"
    kw = dict(
        data="digits",
        budget="3s",
        seeds=1,
        progress_bar=False,
        extra_overrides=("backbone.width=0.25", "train.monitor_train=0"),
    )
    (claim,) = claims_by_name(["projection-head"])
    first = run_claims([claim], out, **kw)["projection-head"]
    run = next((out / "runs").glob("simclr-*/seed0"))
    recorded = json.loads((run / "registered.json").read_text())
    assert recorded["claims"]["projection-head"] == claim.fingerprint() and len(recorded["claims"]) == 15
    # the same rule: the run and its measurement are reused
    assert run_claims([claim], out, **kw)["projection-head"]["arms"] == first["arms"]
    # the margin moved after the numbers were seen: refused, before anything trains
    moved = dataclasses.replace(claim, margin=0.5)
    with pytest.raises(RuleChanged, match="--fresh"):
        run_claims([moved], out, **kw)
    assert not run.with_name("seed0.previous").exists()
    # the page does not judge it by the old runs either
    page = tmp_path / "claims.md"
    run_claims([], out, doc=page, **kw)
    assert "## projection-head: not yet run" not in page.read_text()  # the catalog's own rule still matches
    # --fresh: the old run is kept aside, a new one trains under the new rule
    capsys.readouterr()
    again = run_claims([moved], out, fresh=True, **kw)["projection-head"]
    assert "another version of claim projection-head's rule" in capsys.readouterr().out
    assert run.with_name("seed0.previous").is_dir() and (run / "claim_projection-head.json").is_file()
    assert json.loads((run / "registered.json").read_text())["claims"]["projection-head"] == moved.fingerprint()
    assert again["fingerprint"] == moved.fingerprint() != first["fingerprint"]
    # and now the catalog's rule is the one its runs were not trained under
    run_claims([], out, doc=page, **kw)
    assert "## projection-head: not yet run" in page.read_text() and "--fresh" in page.read_text()


def test_a_run_the_machine_slowed_is_found_and_trained_again(tmp_path, capsys):
    """A wall-clock budget gives a run that other load slowed far fewer steps than its siblings: the page
    does not judge with it, and the next `selfsup claims` moves it aside and trains it again."""
    from selfsup.experiments.claims.harness import disturbed, run_claims

    out, page = tmp_path / "claims", tmp_path / "claims.md"
    kw = dict(
        data="digits",
        budget="3s",
        seeds=3,
        progress_bar=False,
        extra_overrides=("backbone.width=0.25", "train.monitor_train=0", "train.steps=4"),
    )
    (claim,) = claims_by_name(["projection-head"])
    run_claims([claim], out, **kw)
    runs = sorted((out / "runs").glob("simclr-*/seed*"))
    assert len(runs) == 3 and disturbed(runs) == []
    slowed = runs[1] / "summary.json"  # as if the machine had stalled: 1 step where its siblings took 4
    slowed.write_text(json.dumps({**json.loads(slowed.read_text()), "steps": 1}))
    assert disturbed(runs) == [(runs[1], 1, 4)]
    run_claims([], out, doc=page, **kw)
    section = page.read_text().split("## projection-head:")[1].split("\n## ")[0]
    assert section.startswith(" not yet run") and "the machine slowed 1 run(s)" in section and "seed1" in section
    capsys.readouterr()
    again = run_claims([claim], out, **kw)["projection-head"]
    assert "the machine slowed it: 1 steps against its arm's median 4" in capsys.readouterr().out
    assert runs[1].with_name("seed1.previous").is_dir() and disturbed(runs) == []
    assert json.loads(slowed.read_text())["steps"] == 4 and again["verdict"] != "not yet run"
    assert len(again["arms"]["simclr"]) == 3
    # fewer than two finished seeds: nothing to compare with
    assert disturbed(runs[:1]) == []


def test_every_arm_of_every_claim_composes_on_its_data():
    """What `selfsup claims` will train on Fashion-MNIST composes (a recipe key or an override that no longer
    exists fails here, not hours into the runs), and arms a claim compares share an encoder and side."""
    from selfsup.experiments.bench import entry_config

    for claim in claims_by_name():
        cfgs = {
            a.name: entry_config(a.entry(), a.data or "fashion-mnist", None, a.backbone, "3m", None, list(a.overrides))
            for a in claim.arms
        }
        if claim.name in (
            "finetune-vs-linear",
            "contrastive-vs-reconstruction",
            "pretext-is-task-specific",
            "queue-decouples",
        ):
            shapes = {(c.backbone.name, c.backbone.width, c.views.size, c.eval.size) for c in cfgs.values()}
            assert len(shapes) == 1, (claim.name, shapes)

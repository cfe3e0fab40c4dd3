"""The user's own story, end to end: a flat folder of unlabelled images, a few labels brought as a
folder of class sub-folders or a CSV, evaluation on them (cross-validated or on a test folder), a
classifier saved and used on new images, the images worth labelling next, and neighbours.

The images are scikit-learn's digits written as PNG files (always offline), so that the whole story
runs in seconds; the assertions are real behaviour: accuracies far above chance, folds that
partition the labels, a run that works after its training folder is gone."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import load_dataset
from selfsup.data.labelled import load_labelled
from selfsup.eval.labelled import cross_validate, folds_for, per_class
from test_cli import assert_clean_error, last_json, run_cli

TINY = [
    "--no-recipe",
    "--batch-size",
    "64",
    "--epochs",
    "3",
    "backbone.name=convnet",
    "backbone.width=0.5",
    "method.proj_hidden=64",
    "method.proj_dim=32",
    "method.temperature=0.5",
    "views.flip_p=0",
    "views.blur_p=[0,0]",
    "views.crop_scale=[0.3,1]",
    "optim.lr=1.0",
    "optim.scale_lr=false",
    "train.device=cpu",
    "train.log_every=5",
]


def _save(img: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img[0].numpy()).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """flat/ (unlabelled training images), labelled/<class>/ (10 per class, also listed in labels.csv
    and, relative to flat/, in_flat.csv), test/<class>/ and new/ (images to predict, one of them corrupt)."""
    root = tmp_path_factory.mktemp("workflow")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    seen: dict[int, int] = {}
    rows = []
    for i in range(len(train)):
        _save(train.images[i], root / "flat" / f"img{i:04d}.png")
        c = int(train.labels[i])
        if seen.get(c, 0) < 10:
            seen[c] = seen.get(c, 0) + 1
            _save(train.images[i], root / "labelled" / f"digit{c}" / f"img{i:04d}.png")
            rows.append((f"img{i:04d}.png", f"digit{c}"))
    with open(root / "labels.csv", "w", newline="") as f:  # paths relative to the CSV, with a header
        csv.writer(f).writerows([("path", "label"), *((f"flat/{p}", c) for p, c in rows)])
    with open(root / "in_flat.csv", "w", newline="") as f:  # relative to the pretraining folder, no header
        csv.writer(f).writerows(rows)
    for i in range(200):
        _save(test.images[i], root / "test" / f"digit{int(test.labels[i])}" / f"t{i:03d}.png")
    for i in range(200, 240):
        _save(test.images[i], root / "new" / f"n{i:03d}.png")
    (root / "new" / "broken.png").write_bytes(b"not an image")
    return {"root": root, "test_labels": test.labels[:200], "new_labels": test.labels[200:240]}


@pytest.fixture(scope="module")
def run(folders) -> Path:
    """A short pretraining on the unlabelled folder, whose folder is then moved away: everything
    after pretraining must work from the checkpoint and the user's labels alone."""
    root = folders["root"]
    shutil.copytree(root / "flat", root / "flat_copy")
    rc, out, err = run_cli(
        [
            "pretrain",
            "--method",
            "simclr",
            "--data",
            "imagefolder",
            "--data-dir",
            str(root / "flat_copy"),
            "--out",
            str(root / "run"),
            *TINY,
        ]
    )
    assert rc == 0, err
    (root / "pretrain_stdout.txt").write_text(out)
    shutil.rmtree(root / "flat_copy")
    return root / "run"


def test_folder_side_is_chosen_from_the_data_and_recorded(run, folders):
    cfg = (run / "config.yaml").read_text()
    assert "image_size: 8" in cfg  # digits are 8 px: the median side, not a silent 32
    printed = (folders["root"] / "pretrain_stdout.txt").read_text()
    assert "imagefolder: training at 8 px (median shorter side of" in printed and "data.image_size=N" in printed
    meta = json.loads((run / "checkpoints" / "last" / "meta.json").read_text())
    assert (
        meta["input"]["channels"] == 1
        and meta["input"]["stored_size"] == 8
        and meta["num_samples"] == len(load_dataset("digits", "train"))
    )


def test_the_side_is_the_median_shorter_side_capped_for_the_cpu(tmp_path):
    from selfsup.data.folder import AUTO_SIZE_CAP, choose_image_size

    # shorter sides 12, 20, 20, 30 and 90 (landscape and portrait): the median is 20, not the mean nor the floor
    (tmp_path / "mixed").mkdir()
    for i, (w, h) in enumerate([(12, 40), (20, 20), (25, 20), (30, 31), (200, 90)]):
        Image.new("L", (w, h)).save(tmp_path / "mixed" / f"{i}.png")
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not an image")  # skipped, not counted
    assert choose_image_size(tmp_path / "mixed") == (20, "median shorter side of 5 images is 20 px")
    (tmp_path / "big" / "train").mkdir(parents=True)  # a train/ sub-folder is the one measured
    for i in range(3):
        Image.new("RGB", (300, 400)).save(tmp_path / "big" / "train" / f"{i}.jpg")
    side, why = choose_image_size(tmp_path / "big")
    assert side == AUTO_SIZE_CAP < 300 and why.endswith(f"is 300 px, capped at {AUTO_SIZE_CAP} for the CPU")
    assert choose_image_size(tmp_path / "big", cap=128)[0] == 128


def test_labels_from_a_folder_and_from_a_csv_are_the_same_set(folders):
    root = folders["root"]
    a = load_labelled(root / "labelled", 1, 8)
    b = load_labelled(root / "in_flat.csv", 1, 8, search=[root / "flat"])
    assert a.classes == b.classes == [f"digit{i}" for i in range(10)]
    assert len(a) == len(b) == 100
    assert load_labelled(root / "labels.csv", 1, 8).files == b.files
    order = {Path(f).name: i for i, f in enumerate(b.files)}
    perm = torch.tensor([order[Path(f).name] for f in a.files])
    assert torch.equal(a.images, b.images[perm]) and torch.equal(a.labels, b.labels[perm])


def test_label_errors_name_the_fix(folders, tmp_path):
    root = folders["root"]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nimg0000.png,digit0\nnope.png,digit1\n")
    with pytest.raises(Exception, match="1 image listed in .* not found .*nope.png"):
        load_labelled(bad, 1, 8, search=[root / "flat"])
    with pytest.raises(Exception, match="not a folder of class sub-folders"):
        load_labelled(root / "new", 1, 8)
    odd = tmp_path / "odd"
    _save(torch.zeros(1, 8, 8, dtype=torch.uint8), odd / "seven" / "a.png")
    _save(torch.zeros(1, 8, 8, dtype=torch.uint8), odd / "eight" / "a.png")
    with pytest.raises(Exception, match="classes the labelled set does not"):
        load_labelled(odd, 1, 8, classes=[f"digit{i}" for i in range(10)])
    broken = tmp_path / "withbroken"
    shutil.copytree(root / "labelled", broken)
    (broken / "digit3" / "zz.png").write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="skipped 1 unreadable file"):
        assert len(load_labelled(broken, 1, 8)) == 100


def test_cross_validation_tests_every_image_once_in_stratified_folds():
    y = torch.arange(5).repeat(6)  # 5 classes x 6 images
    tested = []

    def oracle(tr, te):
        assert not set(tr.tolist()) & set(te.tolist())
        assert torch.bincount(y[te], minlength=5).tolist() == [int(len(te) / 5)] * 5  # stratified
        tested.extend(te.tolist())
        return y[te]

    res = cross_validate(oracle, y, folds=3)
    assert sorted(tested) == list(range(30)) and res["top1"] == 1.0 and res["folds"] == 3
    assert folds_for(torch.tensor([0, 0, 1, 1, 1]), 5) == 2  # the rarest class allows 2 folds
    with pytest.raises(ValueError, match="at least 2 labelled images of every class"):
        folds_for(torch.tensor([0, 1, 1]), 5)


def test_per_class_accuracy_and_confusion_by_hand():
    y, p = torch.tensor([0, 0, 1, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0, 2])
    r = per_class(y, p, ["a", "b", "c"])
    assert r["confusion"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert r["per_class"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": 1.0}


def test_eval_on_the_users_labels_cross_validated_and_on_a_test_folder(run, folders):
    root = folders["root"]
    rc, out, err = run_cli(["eval", "knn", str(run), "--labels", str(root / "labelled"), "--json"])
    assert rc == 0, err
    cv = last_json(out)
    assert cv["evaluation"] == "stratified 5-fold cross-validation" and len(cv["fold_top1"]) == 5
    assert cv["top1"] > 0.5 and cv["top1_std"] >= 0  # chance is 0.1
    assert sum(map(sum, cv["confusion"])) == 100 and Path(cv["picture"]).is_file()
    rc, out, err = run_cli(
        ["eval", "linear", str(run), "--labels", str(root / "labels.csv"), "--test", str(root / "test")]
    )
    assert rc == 0, err
    assert "held-out test set (200 images)" in out and "confusion matrix:" in out
    res = json.loads((run / "eval_linear_labels-labels.json").read_text())
    assert res["top1"] > 0.6 and sum(map(sum, res["confusion"])) == 200
    assert set(res["per_class"]) == {f"digit{i}" for i in range(10)}


def test_finetune_cluster_and_embed2d_on_the_users_labels(run, folders):
    root = folders["root"]
    # fine-tuning, cross-validated: one fine-tune per fold, every labelled image predicted once
    rc, out, err = run_cli(
        ["eval", "finetune", str(run), "--labels", str(root / "labelled"), "--folds", "2", "--epochs", "15", "--json"]
    )
    assert rc == 0, err
    cv = last_json(out)
    assert cv["evaluation"] == "stratified 2-fold cross-validation" and len(cv["fold_top1"]) == 2
    assert sum(map(sum, cv["confusion"])) == 100 and Path(cv["picture"]).is_file()
    assert cv["top1"] > 0.3  # chance is 0.1
    # k-means on the labelled images' features, scored against their labels
    rc, out, err = run_cli(["eval", "cluster", str(run), "--labels", str(root / "labelled"), "--json"])
    assert rc == 0, err
    res = last_json(out)
    assert res["k"] == 10 and res["nmi"] > 0.3 and (run / "eval_cluster_labels-labelled.json").is_file()
    rc, out, err = run_cli(["eval", "embed2d", str(run), "--labels", str(root / "labelled"), "--json"])
    assert rc == 0, err
    assert last_json(out)["points"] == 100 and (run / "embed2d_tsne_labels-labelled.png").is_file()


def test_evaluate_from_python_on_the_users_labels_is_the_cli(run, folders):
    import selfsup

    root = folders["root"]
    rc, out, err = run_cli(
        ["eval", "linear", str(run), "--labels", str(root / "labels.csv"), "--test", str(root / "test"), "--json"]
    )
    assert rc == 0, err
    cli = last_json(out)
    api = selfsup.evaluate(str(run), "linear", labels=str(root / "labels.csv"), test=str(root / "test"))
    assert api["top1"] == cli["top1"] and api["per_class"] == cli["per_class"] and api["confusion"] == cli["confusion"]


def test_eval_without_labels_on_an_unlabelled_run_says_how_to_bring_them(run):
    rc, _, err = run_cli(["eval", "knn", str(run)])
    assert_clean_error(rc, err, "could not be read", "--labels DIR")  # its training folder is gone, too
    rc, _, err = run_cli(["eval", "knn", str(run), "--test", "x"])
    assert_clean_error(rc, err, "--test needs --labels")


def test_transfer_to_a_labelled_folder_without_a_test_split_is_cross_validated(run, folders):
    rc, out, err = run_cli(
        [
            "eval",
            "transfer",
            str(run),
            "--target",
            "imagefolder",
            "--target-dir",
            str(folders["root"] / "labelled"),
            "--json",
        ]
    )
    assert rc == 0, err
    res = last_json(out)
    assert res["evaluation"].startswith("stratified") and res["pretrained"]["linear"] > 0.5
    # the same report as eval on the user's labels: the folds' spread, class by class, a confusion PNG
    assert 0 < res["pretrained"]["linear_std"] < 0.5 and "linear_std" in res["raw_pixels"]
    assert set(res["per_class"]) == {f"digit{i}" for i in range(10)}
    assert sum(map(sum, res["confusion"])) == 100  # every labelled image predicted once, by its held-out fold
    assert Path(res["picture"]).is_file()
    from selfsup.eval.run import PROTOCOLS

    assert f"linear {100 * res['pretrained']['linear']:.2f} % ± " in PROTOCOLS["transfer"].summary(res)


def test_export_and_embed_need_no_training_data(run, folders, tmp_path):
    rc, _, err = run_cli(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "e.safetensors")])
    assert rc == 0, err
    rc, _, err = run_cli(["embed", str(run), str(folders["root"] / "test"), "--out", str(tmp_path / "f.npy")])
    assert rc == 0, err
    assert np.load(tmp_path / "f.npy").shape[0] == 200


def test_pretraining_into_a_directory_holding_a_run_refuses(run):
    import selfsup

    with pytest.raises(Exception, match="already holds a run"):
        selfsup.pretrain("simclr", "digits", out=str(run), epochs=1)


def test_classify_then_predict_new_images(run, folders, tmp_path):
    root = folders["root"]
    clf = tmp_path / "clf"
    rc, out, err = run_cli(["classify", str(run), "--labels", str(root / "labelled"), "--out", str(clf), "--json"])
    assert rc == 0, err
    info = last_json(out)
    assert info["kind"] == "linear" and info["classes"] == [f"digit{i}" for i in range(10)]
    assert info["estimate"]["evaluation"].startswith("stratified") and info["estimate"]["top1"] > 0.5
    saved = json.loads((clf / "classifier.json").read_text())
    assert saved["input"]["stored_size"] == 8 and saved["input"]["channels"] == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, out, err = run_cli(
            ["predict", str(clf), str(root / "new"), "--out", str(tmp_path / "p.csv"), "--top-k", "3"]
        )
    assert rc == 0, err
    assert "40 predictions" in out and "1 unreadable files skipped" in out
    assert any("skipped 1 unreadable file" in str(w.message) for w in caught)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 40 and set(rows[0]) == {
        "path",
        "label",
        "probability",
        "label_2",
        "probability_2",
        "label_3",
        "probability_3",
    }
    probs = [float(r["probability"]) for r in rows]
    assert all(float(r["probability"]) >= float(r["probability_2"]) >= float(r["probability_3"]) for r in rows)
    assert all(0 < p <= 1 for p in probs)
    truth = {f"n{200 + i:03d}.png": f"digit{int(c)}" for i, c in enumerate(folders["new_labels"])}
    acc = np.mean([truth[r["path"]] == r["label"] for r in rows])
    assert acc > 0.6  # chance 0.1; the same head the estimate measured
    # the classifier directory stands alone: the folded head equals probe(standardised features)
    from selfsup.classify import load_classifier

    model, _, spec = load_classifier(clf)
    assert spec.size == 8 and model.head.out_features == 10
    rc, _, err = run_cli(["classify", str(run), "--labels", str(root / "labelled"), "--out", str(clf)])
    assert_clean_error(rc, err, "already holds a classifier")
    rc, _, err = run_cli(["predict", str(run), str(root / "new"), "--out", str(tmp_path / "q.csv")])
    assert_clean_error(rc, err, "not a classifier directory")


def test_semi_supervised_classifier_from_the_run_and_from_scratch_then_predict(run, folders, tmp_path):
    """`selfsup semi` on the user's folder and labels CSV (paths relative to the folder), from the run's
    encoder and from scratch; both write what `predict` reads."""
    root = folders["root"]
    rc, _, err = run_cli(
        [
            "semi",
            "--method",
            "fixmatch",
            "--init",
            str(run),
            "--labels",
            str(root / "labelled"),
            "--out",
            str(tmp_path / "fix"),
        ]
    )  # the folder it pretrained on is gone (a test above)
    assert_clean_error(rc, err, "--data imagefolder --data-dir DIR")
    rc, out, err = run_cli(
        [
            "semi",
            "--method",
            "fixmatch",
            "--init",
            str(run),
            "--data",
            "imagefolder",
            "--data-dir",
            str(root / "flat"),
            "--labels",
            str(root / "in_flat.csv"),
            "--test",
            str(root / "test"),
            "--steps",
            "40",
            "--out",
            str(tmp_path / "fix"),
            "batch_size=16",
            "mu=2",
            "--json",
        ]
    )
    assert rc == 0, err
    info = last_json(out)
    assert info["kind"] == "fixmatch" and info["num_labelled"] == 100 and info["num_unlabelled"] == 1438
    assert info["estimate"]["evaluation"] == "test" and info["estimate"]["num_test"] == 200
    assert info["estimate"]["top1"] > 0.5 and info["init"] == str(run.resolve()) and not info["from_scratch"]
    assert info["settings"]["flip_p"] == 0.0  # the run's views: digits are not flipped
    rc, out, err = run_cli(["predict", str(tmp_path / "fix"), str(root / "new"), "--out", str(tmp_path / "p.csv")])
    assert rc == 0 and "40 predictions" in out, err
    rc, out, err = run_cli(
        [
            "semi",
            "--method",
            "supervised",
            "--data",
            "imagefolder",
            "--data-dir",
            str(root / "flat"),
            "--labels",
            str(root / "labels.csv"),
            "--steps",
            "20",
            "--out",
            str(tmp_path / "sup"),
            "--json",
        ]
    )
    assert rc == 0, err
    info = last_json(out)
    assert info["from_scratch"] and info["estimate"]["top1"] is None and info["input"]["stored_size"] == 8
    rc, _, err = run_cli(["semi", "--method", "fixmatch", "--init", str(run), "--out", str(tmp_path / "x")])
    assert_clean_error(rc, err, "give the labels")
    rc, _, err = run_cli(
        [
            "semi",
            "--method",
            "fixmatch",
            "--init",
            str(run),
            "--labels",
            str(root / "labelled"),
            "--out",
            str(tmp_path / "y"),
            "threshhold=0.9",
        ]
    )
    assert_clean_error(rc, err, "did you mean 'threshold'")


def test_diagnostics_of_an_unlabelled_run_on_the_users_images(run, folders):
    rc, out, err = run_cli(["eval", "diagnostics", str(run), "--labels", str(folders["root"] / "labelled"), "--json"])
    assert rc == 0, err
    res = last_json(out)
    assert res["num_images"] == 100 and res["images"] == "labels:labelled"
    assert 1 < res["features"]["effective_rank"] <= res["features"]["dim"]
    assert (run / "eval_diagnostics_labels-labelled.json").exists()


def test_label_efficiency_on_the_users_labels(run, folders):
    root = folders["root"]
    rc, out, err = run_cli(
        [
            "eval",
            "semi",
            str(run),
            "--labels",
            str(root / "labelled"),
            "--test",
            str(root / "test"),
            "--fractions",
            "0.3,1",
            "--steps",
            "3",
            "--json",
        ]
    )
    assert rc == 0, err
    rows = last_json(out)["rows"]
    assert [r["num_labelled"] for r in rows] == [30, 100]  # fractions of the user's 100 labels, class-balanced
    assert all(r["linear"] > 0.3 and r["finetune"] is not None for r in rows)
    assert (run / "semi_labels-labelled.png").exists()
    rc, _, err = run_cli(["eval", "semi", str(run), "--labels", str(root / "labelled")])
    assert_clean_error(rc, err, "needs --test")


def test_classify_with_finetuning_and_a_test_folder(run, folders, tmp_path):
    root = folders["root"]
    rc, out, err = run_cli(
        [
            "classify",
            str(run),
            "--labels",
            str(root / "labelled"),
            "--test",
            str(root / "test"),
            "--finetune",
            "--epochs",
            "5",
            "--out",
            str(tmp_path / "ft"),
            "--json",
        ]
    )
    assert rc == 0, err
    info = last_json(out)
    assert info["kind"] == "finetune" and info["estimate"]["evaluation"] == "held-out test set"
    assert info["estimate"]["num_test"] == 200 and info["estimate"]["top1"] > 0.3


def test_linear_head_folds_the_standardisation_exactly():
    from selfsup.eval.linear import fit_probe

    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(60, 7, generator=g) * 3 + 1, torch.arange(3).repeat(20)
    probe = fit_probe(f, y, 3, l2_grid=(1e-3,))
    head = probe.as_linear()
    with torch.no_grad():
        want = probe.lin((f - probe.mean) / probe.std)
        assert torch.allclose(head(f), want, atol=1e-4)


@pytest.mark.parametrize("strategy", ["kcenter", "kmeans", "random"])
def test_select_writes_a_labelling_sheet_and_a_contact_sheet(run, folders, tmp_path, strategy):
    rc, out, err = run_cli(
        [
            "select",
            str(run),
            "--n",
            "30",
            "--strategy",
            strategy,
            "--out",
            str(tmp_path / "to_label.csv"),
            "--images",
            str(folders["root"] / "flat"),
        ]
    )
    assert rc == 0, err
    rows = list(csv.DictReader(open(tmp_path / "to_label.csv")))
    assert len(rows) == 30 and len({r["path"] for r in rows}) == 30 and all(r["label"] == "" for r in rows)
    assert all(r["path"].startswith("img") for r in rows)  # relative to the folder
    labelled = tmp_path / "filled.csv"  # filled in (here from the digits' own order), it is a --labels file
    truth = load_dataset("digits", "train").labels
    with open(labelled, "w", newline="") as f:
        csv.writer(f).writerows(
            [(folders["root"] / "flat" / r["path"], f"d{int(truth[int(r['path'][3:7])])}") for r in rows]
        )
    assert len(load_labelled(labelled, 1, 8)) == 30
    assert (tmp_path / "to_label.png").is_file()


def test_kcenter_covers_every_cluster_before_repeating_one():
    from selfsup.curate import kcenter_greedy, kmeans_representatives

    centres = torch.eye(6) * 10
    x = torch.cat(
        [c + 0.1 * torch.randn(50, 6, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(centres)]
    )
    cluster = torch.arange(6).repeat_interleave(50)
    assert len(set(cluster[kcenter_greedy(x, 6)].tolist())) == 6
    assert len(set(cluster[kmeans_representatives(x, 6)].tolist())) == 6
    # a random pick of 6 from 6 equal clusters misses one most of the time (P(all 6) ~ 1.5 %)


def test_neighbors_grid_and_near_duplicates(run, folders, tmp_path):
    root = folders["root"]
    query = root / "flat" / "img0005.png"
    rc, out, err = run_cli(
        [
            "neighbors",
            str(run),
            "--query",
            str(query),
            "--k",
            "4",
            "--images",
            str(root / "flat"),
            "--out",
            str(tmp_path / "nb.png"),
            "--json",
        ]
    )
    assert rc == 0, err
    res = last_json(out)
    first = res["neighbors"][0][0]
    assert first["image"] == "img0005.png" and first["similarity"] > 0.999  # a pool image finds itself
    assert (tmp_path / "nb.png").is_file()
    dup = tmp_path / "dupfolder"
    shutil.copytree(root / "labelled", dup)
    shutil.copy(dup / "digit3" / next(p.name for p in (dup / "digit3").iterdir()), dup / "digit3" / "copy.png")
    rc, out, err = run_cli(
        [
            "neighbors",
            str(run),
            "--duplicates",
            "--threshold",
            "0.9999",
            "--images",
            str(dup),
            "--out",
            str(tmp_path / "d.csv"),
        ]
    )
    assert rc == 0, err
    rows = list(csv.DictReader(open(tmp_path / "d.csv")))
    assert any("copy.png" in (r["first"] + r["second"]) for r in rows)
    rc, _, err = run_cli(["neighbors", str(run), "--query", str(tmp_path / "nope.png")])
    assert_clean_error(rc, err, "not found")


def test_python_api_equals_the_cli(tmp_path):
    """selfsup.pretrain / selfsup.evaluate compose the configuration as the CLI does (recipe
    included) and give the same run: identical config.yaml, weights and kNN result."""
    import yaml
    from safetensors.torch import load_file

    import selfsup

    over = ["data.limit=256", "train.max_steps=3", "train.monitor_train=0", "train.device=cpu"]
    rc, _, err = run_cli(
        ["pretrain", "--method", "simclr", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "cli"), *over]
    )
    assert rc == 0, err
    selfsup.pretrain("simclr", "digits", epochs=1, out=str(tmp_path / "api"), overrides=over, progress_bar=False)
    a, b = (yaml.safe_load((tmp_path / r / "config.yaml").read_text()) for r in ("cli", "api"))
    assert a.pop("out") != b.pop("out") and a == b
    assert a["backbone"]["name"] == "convnet"  # the digits recipe, not the ResNet-18 defaults
    wa, wb = (load_file(tmp_path / r / "checkpoints" / "last" / "model.safetensors") for r in ("cli", "api"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rc, out, _ = run_cli(["eval", "knn", str(tmp_path / "cli"), "--json"])
    assert last_json(out)["top1"] == selfsup.evaluate(str(tmp_path / "api"), "knn")["top1"]


def test_report_shows_the_accuracy_on_the_users_labels(run, folders, tmp_path):
    rc, _, err = run_cli(["eval", "linear", str(run), "--labels", str(folders["root"] / "labelled")])
    assert rc == 0, err
    rc, out, err = run_cli(["report", str(run), "--out", str(tmp_path / "r.html")])
    assert rc == 0, err
    html = (tmp_path / "r.html").read_text()
    assert "linear, your labels (%)" in html and "confusion" in html


def test_robustness_on_the_users_labels_needs_a_test_folder(run, folders):
    root = folders["root"]
    rc, out, err = run_cli(
        [
            "eval",
            "robustness",
            str(run),
            "--labels",
            str(root / "labelled"),
            "--test",
            str(root / "test"),
            "--corruptions",
            "noise,occlusion",
            "--json",
        ]
    )
    assert rc == 0, err
    res = last_json(out)
    assert res["encoder"]["clean"] > 0.5 and len(res["encoder"]["noise"]) == 5
    assert res["encoder"]["occlusion"][4] < res["encoder"]["clean"]  # 40 % of an 8-px digit hidden costs accuracy
    rc, _, err = run_cli(["eval", "robustness", str(run), "--labels", str(root / "labelled")])
    assert_clean_error(rc, err, "needs --test")

"""CLIP: the loss against an explicit computation, the temperature cap, the character tokenizer,
captioned data (synthetic and from a captions.tsv), and zero-shot / retrieval after a short run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.data import load_dataset
from selfsup.data.captions import DIGIT_NAMES
from selfsup.data.text import detokenize, tokenize
from selfsup.eval.clip import retrieval, zero_shot
from selfsup.methods.clip import clip_loss


def test_clip_loss_against_explicit_sums():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    scale = torch.tensor(10.0)
    loss, _ = clip_loss(img, txt, scale)
    s = [[10.0 * float(img[i] @ txt[j]) for j in range(4)] for i in range(4)]
    i2t = sum(-s[i][i] + math.log(sum(math.exp(v) for v in s[i])) for i in range(4)) / 4
    t2i = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(4))) for j in range(4)) / 4
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_temperature_starts_at_the_paper_value_and_is_capped():
    import selfsup

    m = selfsup.create_method("clip", backbone="convnet", in_channels=1, width=0.25)
    assert m.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        m.logit_scale.fill_(math.log(1000.0))
    m.on_step_end(0.5)
    assert m.logit_scale.exp().item() == pytest.approx(100.0)


def test_tokenizer_round_trip():
    ids = tokenize(["A Photo of a Sneaker", "é!"], length=12)
    assert ids.shape == (2, 12) and ids[0, 0] == 1 and ids[1, 3] == 0  # [BOS] first, then padding
    assert detokenize(ids) == ["a photo of ", "?!"]  # lower-cased, cut to the length, non-ASCII -> "?"


def test_synthetic_captions_name_the_class():
    ds = load_dataset("captioned-digits", "train")
    assert len(ds.captions) == len(ds) and len(set(ds.captions)) > 200  # varied
    for cap, y in zip(ds.captions[:300], ds.labels[:300].tolist()):
        assert any(name in cap.split(" ") or name + "," in cap for name in DIGIT_NAMES[y]), cap


def test_captions_tsv_next_to_an_image_folder(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "captions.tsv").write_text("im0.png\ta dark square\nim1.png\ta grey square\nim2.png\ta light square\n")
    ds = load_dataset("imagefolder", "train", tmp_path, 8)
    assert sorted(ds.captions) == ["a dark square", "a grey square", "a light square"]
    (tmp_path / "captions.tsv").write_text("im0.png\ta dark square\n")
    from selfsup.data import DatasetError

    with pytest.raises(DatasetError, match="no caption for 2"):
        load_dataset("imagefolder", "train", tmp_path, 8)


def test_zero_shot_and_retrieval_metrics():
    emb = torch.eye(3)
    assert retrieval(emb, emb)["image_to_text_r1"] == 1.0
    shuffled = retrieval(emb, emb[[1, 2, 0]])
    assert shuffled["image_to_text_r1"] == 0.0 and shuffled["text_to_image_r5"] == 1.0
    assert shuffled["chance_r1"] == pytest.approx(1 / 3) and shuffled["chance_r5"] == 1.0
    # image i's nearest text is i - 1 (mod 3), never its own; but captions 0 and 1 are the same string and
    # pairs 0 and 2 share a class: image 1 -> text 0 reads as its own caption, image 0 -> text 2 is its class
    read = retrieval(emb, emb[[1, 2, 0]], ks=(1,), labels=torch.tensor([5, 6, 5]), captions=["a", "a", "b"])
    assert read["image_to_text_caption_r1"] == pytest.approx(1 / 3)
    assert read["image_to_text_class_r1"] == pytest.approx(1 / 3)
    assert read["text_to_image_caption_r1"] == pytest.approx(1 / 3)  # text 0 -> image 1, whose caption is "a" too
    text = torch.eye(3)[:, None, :].expand(3, 2, 3)  # 3 classes x 2 prompts
    res = zero_shot(torch.eye(3)[[0, 2, 1]], torch.tensor([0, 2, 0]), text)
    assert res["top1"] == pytest.approx(2 / 3) and res["chance"] == pytest.approx(1 / 3)


def test_clip_trains_on_captioned_digits_and_classifies_zero_shot(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "pretrain",
            "--method",
            "clip",
            "--data",
            "captioned-digits",
            "--backbone",
            "convnet",
            "--epochs",
            "15",
            "--batch-size",
            "128",
            "--out",
            str(run),
            "backbone.width=0.5",
            "views.flip_p=0.0",
            "method.text_width=64",
            "method.text_layers=2",
            "method.context=48",
            "method.embed_dim=64",
            "optim.name=adamw",
            "optim.lr=2e-3",
            "optim.weight_decay=0.01",
            "optim.scale_lr=false",
            "train.monitor_train=0",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", "zeroshot", str(run), "--prompts", "a photo of a {label}|a {label}", "--json"]) == 0
    zs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "retrieval", str(run), "--json"]) == 0
    rt = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print(
        f"clip on digits: zero-shot top-1 {zs['top1']:.3f} (chance 0.1), retrieval i->t R@5 {rt['image_to_text_r5']:.3f}"
    )
    assert zs["top1"] > 0.4  # the captions name the digits; chance is 0.1
    assert rt["image_to_text_r5"] > 5 / 360  # above chance for 5 of the 360 test captions
    rc = main(["pretrain", "--method", "clip", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "nocap")])
    assert rc == 2 and "captions" in capsys.readouterr().err  # a dataset without captions: a clear error

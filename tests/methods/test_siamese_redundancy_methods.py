"""SimSiam, Barlow Twins, VICReg, W-MSE: heads as in the papers, stop-gradient, the predictor's
fixed learning rate, SimSiam's collapse without stop-gradient, logs, recipes; BYOL's no-BN ablation."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import selfsup
from selfsup.config import OptimConfig, load_yaml, resolve
from selfsup.data import load_dataset
from selfsup.data.batch import Batch
from selfsup.eval import effective_rank, embedding_std
from selfsup.train.loop import build_method
from selfsup.train.optim import build_optimizer, set_lr
from selfsup.transforms import Views, eval_view, view_preset

REPO = Path(__file__).resolve().parents[2]
MINE = ["simsiam", "barlow", "vicreg", "wmse"]


def make(name: str, **cfg):
    torch.manual_seed(0)
    return selfsup.create_method(name, backbone="convnet", in_channels=1, width=0.25, **cfg)


def batch_of(b: int = 16, seed: int = 0, preset: str = "simclr") -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 1, 8, 8), dtype=torch.uint8, generator=g)
    batch = Batch(images, torch.arange(b), None)
    batch.views = Views(view_preset(preset), [0.3], [0.35], image_size=8)(images, g)
    return batch


def kinds(seq: nn.Sequential) -> list[str]:
    return [type(m).__name__ for m in seq]


# ------------------------------------------------------------------------------------ SimSiam


def test_simsiam_heads_follow_the_paper():
    m = make("simsiam")  # defaults: projector 2048-2048-2048, predictor 2048-512-2048
    assert kinds(m.projector) == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
    ]  # BN on every layer, no ReLU at the output
    assert [l.out_features for l in m.projector if isinstance(l, nn.Linear)] == [2048, 2048, 2048]
    assert kinds(m.predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]  # BN + ReLU in the hidden layer only
    assert (m.predictor[0].in_features, m.predictor[0].out_features, m.predictor[3].out_features) == (2048, 512, 2048)
    m.eval()
    assert m.embedding(torch.randn(3, 1, 8, 8)).shape == (3, 2048)


class _ConstantPredictor(nn.Module):
    """Ignores its input: the predictions no longer depend on the encoder."""

    def __init__(self, dim: int):
        super().__init__()
        self.p = nn.Parameter(torch.randn(dim))

    def forward(self, z):
        return self.p.expand_as(z)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_gradient_reaches_the_encoder_only_through_the_predictor(stop_gradient):
    # with a predictor that ignores z, the only path left from the loss to the encoder is the
    # target branch z: the stop-gradient must cut it, and without it the encoder must learn
    m = make("simsiam", proj_hidden=64, proj_dim=32, pred_hidden=16, stop_gradient=stop_gradient)
    m.predictor = _ConstantPredictor(32)
    m.train()
    m.training_step(batch_of()).loss.backward()
    enc = [p.grad for p in m.encoder.parameters()]
    if stop_gradient:
        assert all(g is None or g.abs().sum() == 0 for g in enc)
        assert m.predictor.p.grad.abs().sum() > 0
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in enc)


def test_simsiam_loss_is_the_symmetrised_negative_cosine():
    m = make("simsiam", proj_hidden=64, proj_dim=32, pred_hidden=16)
    m.train()
    b = batch_of()
    loss = m.training_step(b).loss
    x1, x2 = b.views
    z1, z2 = m.projector(m.encoder(x1)), m.projector(m.encoder(x2))
    p1, p2 = m.predictor(z1), m.predictor(z2)
    cos = nn.functional.cosine_similarity
    assert loss.item() == pytest.approx((-cos(p1, z2).mean() / 2 - cos(p2, z1).mean() / 2).item(), rel=1e-5)
    assert -1 <= loss.item() <= 1


def test_simsiam_predictor_groups_are_flagged_fixed_lr():
    m = make("simsiam", proj_hidden=64, proj_dim=32, pred_hidden=16)
    groups = m.param_groups()
    pred = {id(p) for p in m.predictor.parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= pred or not ids & pred, "a group mixes predictor and other parameters"
        assert g.get("fixed_lr", False) == bool(ids & pred)
    assert {id(p) for g in groups if g.get("fixed_lr") for p in g["params"]} == pred
    # the optimiser keeps the flag on its groups, for a schedule to read
    opt = build_optimizer(groups, OptimConfig(name="sgd", lr=0.05), 256)
    assert sum(bool(g.get("fixed_lr")) for g in opt.param_groups) == 2  # decay and no-decay predictor groups
    off = make("simsiam", proj_hidden=64, proj_dim=32, pred_hidden=16, fixed_pred_lr=False)
    assert not any(g.get("fixed_lr") for g in off.param_groups())


def test_the_schedule_keeps_fixed_lr_groups_at_their_base_rate():
    m = make("simsiam", proj_hidden=64, proj_dim=32, pred_hidden=16)
    opt = build_optimizer(m.param_groups(), OptimConfig(name="sgd", lr=0.05), 256)
    set_lr(opt, 0.1)  # late in a cosine schedule
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.05 if g.get("fixed_lr") else 0.005)


def _train_simsiam_on_digits(stop_gradient: bool, steps: int = 60, seed: int = 0):
    """A few SGD steps on digits (batch 128, lr 0.5 constant), then the embeddings z of the test split."""
    torch.manual_seed(seed)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    mean, std = [0.3], [0.35]
    m = selfsup.create_method(
        "simsiam",
        backbone="convnet",
        in_channels=1,
        width=0.5,
        proj_hidden=256,
        proj_dim=256,
        pred_hidden=64,
        stop_gradient=stop_gradient,
    )
    views = Views(
        dataclasses.replace(view_preset("simclr"), crop_scale=(0.3, 1.0), flip_p=0.0, blur_p=(0.0, 0.0)),
        mean,
        std,
        image_size=8,
    )
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    m.train()
    for _ in range(steps):
        idx = torch.randint(len(train), (128,), generator=g)
        batch = Batch(train.images[idx], idx, None)
        batch.views = views(batch.images, g)
        loss = m.training_step(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        return m.embedding(eval_view(test.images, mean, std, 8)), loss.item()


def test_simsiam_collapses_without_stop_gradient_and_not_with_it():
    """The paper's fig. 2 in seconds: 60 SGD steps (lr 0.5) on digits, 256-d projector.

    Seen on seeds 0-2 (effective rank of the 360 test embeddings, of at most 256; per-dimension std
    of the normalised embeddings, 1/sqrt(256) = 0.0625 when spread): with stop-gradient rank
    35.5 / 32.0 / 34.6, std 0.060; without it rank 1.3 / 1.4 / 4.5, std 0.001-0.007, and the loss at
    -0.89..-0.94 (the collapsed solution's -1). At 30 steps the collapse was complete on one machine
    (rank 1.6-2.8) and not yet on another (rank 3.1-8.8: CPU kernels differ in rounding), so the
    test gives it 60.
    """
    z_sg, loss_sg = _train_simsiam_on_digits(stop_gradient=True)
    z_no, loss_no = _train_simsiam_on_digits(stop_gradient=False)
    r_sg, r_no = effective_rank(z_sg), effective_rank(z_no)
    print(
        f"simsiam effective rank: stop-gradient {r_sg:.1f}, none {r_no:.1f}; std {embedding_std(z_sg):.4f} vs "
        f"{embedding_std(z_no):.4f}; loss {loss_sg:.3f} vs {loss_no:.3f}"
    )
    assert r_no < 5, "without stop-gradient SimSiam should collapse"
    assert r_sg > 20, "with stop-gradient SimSiam should not collapse"
    assert embedding_std(z_no) < 0.5 * embedding_std(z_sg)
    assert loss_no < loss_sg  # the collapsed solution minimises the loss better: that is the trap


# ------------------------------------------------------------------------------------ Barlow, VICReg, W-MSE


@pytest.mark.parametrize(
    "name,keys",
    [
        ("barlow", {"barlow/on_diag", "barlow/off_diag"}),
        ("vicreg", {"vicreg/invariance", "vicreg/variance", "vicreg/covariance"}),
    ],
)
def test_redundancy_methods_log_their_terms_and_heads_have_three_layers(name, keys):
    m = make(name, proj_hidden=64, proj_dim=48)
    assert kinds(m.projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert m.projector[-1].bias is None and m.projector[-1].out_features == 48
    m.train()
    out = m.training_step(batch_of(preset="byol"))
    assert set(out.logs) == keys
    assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad for v in out.logs.values())
    if name == "vicreg":
        c = m.cfg
        total = (
            c.sim_coeff * out.logs["vicreg/invariance"]
            + c.std_coeff * out.logs["vicreg/variance"]
            + c.cov_coeff * out.logs["vicreg/covariance"]
        )
        assert out.loss.item() == pytest.approx(total.item(), rel=1e-5)
    else:
        total = out.logs["barlow/on_diag"] + m.cfg.lambd * out.logs["barlow/off_diag"]
        assert out.loss.item() == pytest.approx(total.item(), rel=1e-5)


def test_wmse_whitens_sub_batches_and_warns_when_they_are_too_small():
    m = make("wmse", proj_hidden=64, emb_dim=8, w_size=16)
    m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 32 rows in sub-batches of 16 > 8 dimensions: no shrinkage needed
        out = m.training_step(batch_of(b=32))
    assert torch.isfinite(out.loss) and 0 <= out.loss.item() <= 4
    small = make("wmse", proj_hidden=64, emb_dim=32, w_size=16)
    with pytest.warns(UserWarning, match="singular"):
        assert torch.isfinite(small.training_step(batch_of(b=16)).loss)


# ------------------------------------------------------------------------------------ recipes and the BYOL ablation


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("data", ["digits", "fashion-mnist"])
def test_recipes_resolve_and_build(name, data):
    path = REPO / "configs" / f"{name}_{data}.yaml"
    cfg = resolve([load_yaml(path), {"method": {"name": name}, "data": {"name": data}}])
    assert cfg.method_name == name
    m = build_method(cfg, in_channels=1)
    assert m.encoder.num_features > 0
    if name == "simsiam":
        assert cfg.optim.name == "sgd"


def test_byol_no_bn_ablation_config_loads_and_removes_bn_from_the_heads():
    from selfsup.cli import build_config, make_parser

    path = REPO / "configs" / "ablations" / "byol_no_bn.yaml"
    assert load_yaml(path) == {"method": {"head_bn": False}}  # the file changes nothing else
    args = make_parser().parse_args(["pretrain", "--method", "byol", "--data", "fashion-mnist", "--config", str(path)])
    cfg = build_config(args)
    assert cfg.method_name == "byol" and cfg.method.head_bn is False
    assert cfg.backbone.name == "resnet10"  # the fashion-mnist recipe still applies underneath
    m = build_method(cfg, in_channels=1)
    heads = [m.projector, m.predictor, m.target_projector]
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for h in heads for x in h.modules())
    assert any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.encoder.modules())  # encoder keeps its BN
    with_bn = build_method(resolve([{"method": {"name": "byol"}, "backbone": {"name": "convnet"}}]), in_channels=1)
    assert any(isinstance(x, nn.BatchNorm1d) for x in with_bn.projector.modules())

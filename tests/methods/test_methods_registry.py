"""Every registered method honours the contract the loop relies on (new methods are picked up
automatically: the tests are parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch

import selfsup
from selfsup import registry
from selfsup.data.batch import Batch
from selfsup.data.dataset import ImageDataset
from selfsup.methods import EpochContext, Method, StepOutput
from selfsup.nn import Runtime, cosine_momentum
from selfsup.registry import get_method_spec, register
from selfsup.transforms import Views, view_preset

METHODS = selfsup.list_methods()


def channels(name: str) -> int:
    return 3 if get_method_spec(name).needs.color else 1


def small_settings(name: str) -> dict:
    """The method's settings of its digits recipe (sized for small data: BEiT's 64-token tokenizer, not the
    paper's 8192), as the DDP test worker takes them; {} for a method without one."""
    import yaml

    from selfsup.config import recipe_path

    path = recipe_path(name, "digits")
    method = (yaml.safe_load(path.read_text()) or {}).get("method", {}) if path else {}
    return {k: v for k, v in method.items() if k != "name"}


def make(name: str, **settings) -> Method:
    torch.manual_seed(0)
    c = channels(name)
    vit = get_method_spec(name).needs.backbone == "vit"
    return selfsup.create_method(
        name,
        backbone="vit_micro" if vit else "convnet",
        in_channels=c,
        width=1.0 if vit else 0.25,
        num_samples=64,
        image_size=8,
        normalization=([0.3] * c, [0.35] * c),
        **settings,
    )


def digits_batch(name: str, b: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    c = channels(name)
    images = torch.randint(0, 256, (b, c, 8, 8), dtype=torch.uint8, generator=g)
    batch = Batch(images, torch.arange(b), torch.randint(0, 10, (b,), generator=g))
    spec = get_method_spec(name)
    views = Views(view_preset(spec.views), [0.3] * c, [0.35] * c, image_size=8, min_views=spec.needs.views)
    if spec.needs.boxes:  # location-matching methods get each view's crop geometry
        batch.views, batch.boxes = views(images, g, boxes=True)
    else:
        batch.views = views(images, g)
    if spec.needs.text:  # image-text methods get captions
        from selfsup.data.text import tokenize

        batch.texts = tokenize([f"a photo of a {int(y)}" for y in batch.labels], 16)
    return batch


def test_registry_lists_the_core_methods():
    assert {"simclr", "byol"} <= set(METHODS)
    assert METHODS == sorted(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_training_step_gives_finite_loss_and_gradients_reach_the_encoder(name):
    method = make(name)
    method.train()
    out = method.training_step(digits_batch(name))
    assert isinstance(out, StepOutput)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    for k, v in out.logs.items():
        assert torch.isfinite(torch.as_tensor(v, dtype=torch.float64)).all(), k
    out.loss.backward()
    for pname, p in method.encoder.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: encoder.{pname} got no gradient"
            assert p.grad.abs().sum() > 0, f"{name}: encoder.{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", METHODS)
def test_encoder_and_embedding(name):
    method = make(name).eval()
    x = torch.randn(4, channels(name), 8, 8)
    with torch.no_grad():
        h = method.encoder(x)
        e = method.embedding(x)
    assert h.shape == (4, method.encoder.num_features)
    assert e.shape[0] == 4 and e.ndim == 2 and torch.isfinite(e).all()


@pytest.mark.parametrize("name", METHODS)
def test_param_groups_cover_trainable_parameters_once_without_decay_on_1d(name):
    method = make(name)
    groups = method.param_groups()
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)), "a parameter appears in two groups"
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert set(seen) == trainable
    for g in groups:
        no_decay = g.get("weight_decay", None) == 0.0
        for p in g["params"]:
            if p.ndim <= 1:
                assert no_decay, "biases and norm parameters must be in a no-weight-decay group"
            else:
                assert not no_decay, "weight matrices and kernels must get weight decay"


@pytest.mark.parametrize("name", METHODS)
def test_on_step_end_moves_frozen_targets(name):
    method = make(name)
    frozen = {n: p.detach().clone() for n, p in method.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method.train()
    method.training_step(digits_batch(name)).loss.backward()
    opt.step()
    method.on_step_end(0.5)
    if not frozen:
        return  # no EMA target: on_step_end only had to run
    after = dict(method.named_parameters())
    moved = [n for n, old in frozen.items() if not torch.equal(after[n].detach(), old)]
    if not moved:  # not an EMA target: then a network the method trains in its other hook (BEiT's tokenizer)
        method = make(name, **small_settings(name))
        frozen = {n: p.detach().clone() for n, p in method.named_parameters() if not p.requires_grad}
        c = channels(name)
        images = torch.randint(0, 256, (64, c, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        data = ImageDataset(images, torch.arange(64) % 10, [str(k) for k in range(10)], "random")
        method.on_epoch_start(0, EpochContext(data, [0.3] * c, [0.35] * c, 8, Runtime("cpu")))
        after = dict(method.named_parameters())
        moved = [n for n, old in frozen.items() if not torch.equal(after[n].detach(), old)]
    assert moved, f"{name}: on_step_end and on_epoch_start left every frozen (target) parameter unchanged"


def test_byol_target_is_the_ema_of_the_online_network():
    method = make("byol")
    t_old = method.target_encoder.features[0].weight.detach().clone()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method.train()
    method.training_step(digits_batch("byol")).loss.backward()
    opt.step()
    online = method.encoder.features[0].weight.detach().clone()
    assert not torch.equal(online, t_old)
    method.on_step_end(0.5)
    m = cosine_momentum(method.cfg.tau_base, 0.5)
    assert m == pytest.approx(1 - (1 - 0.996) / 2)
    assert method.momentum == pytest.approx(m)
    torch.testing.assert_close(
        method.target_encoder.features[0].weight, m * t_old + (1 - m) * online, rtol=1e-6, atol=1e-8
    )
    # the target projector moves too, and the target keeps receiving no gradient
    assert all(not p.requires_grad for p in method.target_encoder.parameters())
    assert all(not p.requires_grad for p in method.target_projector.parameters())


def test_register_refuses_a_duplicate_name(monkeypatch):
    monkeypatch.setattr(registry, "METHODS", registry.METHODS.copy())
    spec = get_method_spec("simclr")

    class Other(Method):
        pass

    with pytest.raises(ValueError, match="simclr"):
        register("simclr", config=spec.config, views="simclr")(Other)
    assert registry.METHODS["simclr"].cls is spec.cls


def test_unknown_method_name_suggests():
    with pytest.raises(KeyError) as e:
        get_method_spec("simclrr")
    assert "'simclr'" in e.value.args[0] and "byol" in e.value.args[0]


def test_create_method_validates_its_config():
    from selfsup.config import ConfigError

    m = selfsup.create_method("simclr", backbone="convnet", in_channels=3, width=0.25, temperature=0.5)
    assert m.cfg.temperature == 0.5 and m.encoder.features[0].in_channels == 3
    with pytest.raises(ConfigError, match="Did you mean 'temperature'"):
        selfsup.create_method("simclr", backbone="convnet", temprature=0.5)
    encoder = selfsup.create_backbone("convnet", in_channels=1, width=0.25)
    assert selfsup.create_method("byol", backbone=encoder).encoder is encoder


def test_methods_that_need_the_image_shape_say_so():
    with pytest.raises(ValueError, match="image_shape"):
        selfsup.create_method("ae", backbone="convnet", in_channels=1)  # no image_size: no decoder can be built
    with pytest.raises(ValueError, match="normalization"):
        selfsup.create_method("colorization", backbone="convnet", in_channels=3, image_size=8)


@pytest.mark.parametrize("name", [m for m in METHODS if get_method_spec(m).needs.backbone == "vit"])
def test_a_vit_only_method_given_a_cnn_refuses_once_from_its_declared_needs(name):
    with pytest.raises(ValueError, match=f"{name} needs a ViT backbone.*--backbone vit_tiny"):
        selfsup.create_method(
            name,
            backbone="convnet",
            in_channels=1,
            width=0.25,
            num_samples=8,
            image_size=8,
            normalization=([0.3], [0.35]),
        )


def test_a_colour_method_given_grey_images_refuses_from_its_declared_needs():
    for name in [m for m in METHODS if get_method_spec(m).needs.color]:
        with pytest.raises(ValueError, match=f"{name} needs colour images \\(3 channels\\), got 1"):
            selfsup.create_method(
                name, backbone="convnet", in_channels=1, width=0.25, image_size=8, normalization=([0.3], [0.35])
            )


def test_needs_are_data_on_the_spec_not_attributes_probed_on_the_class():
    import ast
    import inspect

    from selfsup.registry import Needs, register

    old = {"min_views", "needs_color", "needs_vit", "uses_text", "skips_parameters", "needs_boxes", "uses_labels"}
    for spec in selfsup.registry.method_specs():
        body = ast.parse(inspect.getsource(inspect.getmodule(spec.cls))).body
        attrs = {
            t.id
            for c in body
            if isinstance(c, ast.ClassDef)
            for s in c.body
            if isinstance(s, ast.Assign)
            for t in s.targets
            if isinstance(t, ast.Name)
        }
        assert not attrs & old, f"{spec.name}: declare {attrs & old} in @register(..., needs=Needs(...))"
        assert isinstance(spec.needs, Needs)
    assert "signature" not in inspect.getsource(selfsup.registry.instantiate)  # a BuildContext, always passed
    with pytest.raises(ValueError, match="views >= 1"):
        Needs(views=0)
    with pytest.raises(ValueError, match="needs.text but NoText has no encode_text"):
        register("no_text_method", config=object, views="simclr", needs=Needs(text=True))(type("NoText", (), {}))
    assert "no_text_method" not in METHODS and "no_text_method" not in selfsup.list_methods()


def test_optional_abilities_are_protocols():
    from selfsup.methods import EncodesText, FinetunesOwnEncoder, encoder_to_finetune

    v2, v1 = make("simclrv2"), make("simclr")
    assert isinstance(v2, FinetunesOwnEncoder) and not isinstance(v1, FinetunesOwnEncoder)
    assert encoder_to_finetune(v1) is v1.evaluated_encoder
    head = encoder_to_finetune(v2)  # backbone + the projection head's first layer (SimCLR v2, sec. 2)
    assert head(torch.zeros(2, 1, 8, 8)).shape[1] == v2.projector[0].out_features
    assert [m for m in METHODS if isinstance(make(m), EncodesText)] == [
        m for m in METHODS if get_method_spec(m).needs.text
    ]

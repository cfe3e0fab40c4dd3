"""DenseCL: the correspondence recovers a known permutation of feature vectors; the loss is
(1 - lambda) MoCo v2's InfoNCE + lambda the per-location InfoNCE against the dense queue, written
out by hand; queues and the momentum encoder change only in on_step_end; it learns on digits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from learning import digits_recipe
from safetensors.torch import load_file

import selfsup
from selfsup.config import resolve
from selfsup.data import load_dataset
from selfsup.data.batch import Batch
from selfsup.eval import extract_features, knn_accuracy
from selfsup.losses.dense import dense_correspondence, gather_locations
from selfsup.methods.densecl import DenseCLConfig
from selfsup.train import fit
from selfsup.train.loop import build_method

B = 8


def make(**cfg):
    torch.manual_seed(0)
    cfg = {"queue_size": 40, "bn_groups": 1, "shuffle_bn": False, **cfg}
    return selfsup.create_method("densecl", backbone="convnet", in_channels=1, width=0.25, **cfg).train()


def batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b = Batch(torch.zeros(B, 1, 16, 16, dtype=torch.uint8), torch.arange(B))
    b.views = [torch.randn(B, 1, 16, 16, generator=g), torch.randn(B, 1, 16, 16, generator=g)]  # 2 x 2 maps
    return b


def test_config_is_the_papers():
    c = DenseCLConfig()
    assert (c.loss_lambda, c.temperature, c.queue_size, c.dim, c.momentum, c.mlp) == (0.5, 0.2, 65536, 128, 0.999, True)
    m = make()
    convs = [l for l in m.dense_head if isinstance(l, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(l.kernel_size == (1, 1) for l in convs)
    assert not any(isinstance(l, torch.nn.BatchNorm2d) for l in m.dense_head)


def test_correspondence_recovers_a_known_permutation():
    g = torch.Generator().manual_seed(0)
    fq = torch.randn(3, 16, 9, generator=g)  # 3 images, 16 channels, a 3 x 3 grid
    perm = torch.stack([torch.randperm(9, generator=g) for _ in range(3)])  # [3, 9]
    scale = torch.rand(3, 1, 9, generator=g) + 0.5  # cosine is blind to the length
    fk = torch.stack([fq[n][:, perm[n]] for n in range(3)]) * scale  # key location j holds query location perm[n, j]
    idx = dense_correspondence(fq, fk)  # [3, 9]
    assert torch.equal(idx, torch.argsort(perm, dim=1))  # query location s is found where perm[j] = s
    torch.testing.assert_close(gather_locations(fk, idx) / gather_locations(scale, idx), fq)


def explicit_loss(m, b, queue, dense_queue) -> torch.Tensor:
    """The paper's L = (1 - lambda) L_q + lambda L_r written with loops over images and locations."""
    tau, lam = m.cfg.temperature, m.cfg.loss_lambda
    with torch.no_grad():
        fq, fk = m.encoder.forward_maps(b.views[0]), m.key_encoder.forward_maps(b.views[1])  # [N, F, 2, 2]
        q = F.normalize(m.head(fq.mean((2, 3))), dim=1)
        k = F.normalize(m.key_head(fk.mean((2, 3))), dim=1)
        r = F.normalize(m.dense_head(fq).flatten(2), dim=1)  # [N, D, 4]
        t = F.normalize(m.key_dense_head(fk).flatten(2), dim=1)
    fq, fk = fq.flatten(2), fk.flatten(2)
    queue, dense_queue = F.normalize(queue, dim=1), F.normalize(dense_queue, dim=1)

    def nce(a, pos, negs):
        logits = [a @ pos] + [a @ n for n in negs]
        return -(logits[0] / tau - torch.logsumexp(torch.stack(logits) / tau, 0))

    l_q = sum(nce(q[n], k[n], queue) for n in range(B)) / B
    l_r, count = 0.0, 0
    for n in range(B):
        for s in range(fq.shape[2]):
            cos = [F.cosine_similarity(fq[n, :, s], fk[n, :, j], dim=0) for j in range(fk.shape[2])]
            j = int(torch.stack(cos).argmax())
            l_r, count = l_r + nce(r[n, :, s], t[n, :, j], dense_queue), count + 1
    return (1 - lam) * l_q + lam * l_r / count


def test_loss_is_the_papers_and_state_changes_only_in_the_hook():
    m = make(momentum=0.9)
    b1, b2 = batch(1), batch(2)
    out = m.training_step(b1)
    assert len(m.queue) == 0 and len(m.dense_queue) == 0, "keys are enqueued in on_step_end, not in training_step"
    with torch.no_grad():
        fk = m.key_encoder.forward_maps(b1.views[1])
        k1 = F.normalize(m.key_head(fk.mean((2, 3))), dim=1)
        t1 = F.normalize(m.key_dense_head(fk).mean((2, 3)), dim=1)  # the pooled dense key (official queue2)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    key_params = [m.key_encoder, m.key_head, m.key_dense_head]
    assert all(p.grad is None for mod in key_params for p in mod.parameters())
    before = [p.detach().clone() for mod in key_params for p in mod.parameters()]
    opt.step()
    assert all(torch.equal(p, o) for p, o in zip([p for mod in key_params for p in mod.parameters()], before))
    online = [p.detach().clone() for mod in (m.encoder, m.head, m.dense_head) for p in mod.parameters()]
    m.on_step_end(0.1)
    after = [p.detach() for mod in key_params for p in mod.parameters()]
    for a, o, q in zip(after, before, online):
        torch.testing.assert_close(a, 0.9 * o + 0.1 * q, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(m.queue.items(), k1)
    torch.testing.assert_close(m.dense_queue.items(), t1)

    want = explicit_loss(m, b2, k1, t1)
    got = m.training_step(b2)
    torch.testing.assert_close(got.loss, want, rtol=1e-5, atol=1e-5)
    assert got.logs["infonce_bound"] == got.logs["infonce_bound"]  # finite
    assert math.isfinite(float(got.logs["densecl/dense"]))


def test_learns_on_digits(tmp_path):
    # digits upsampled to 16 px so the convnet's map is 2 x 2 (the recipe's views.size), and kNN at 16 px too
    layers = digits_recipe("densecl", 25, {"queue_size": 1024, "momentum": 0.99, "bn_groups": 4})
    layers[0]["views"]["size"] = 16
    cfg = resolve(layers)
    fit(cfg, tmp_path / "run", progress_bar=False)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(cfg.train.seed)
    random_init = build_method(cfg, train.channels, len(train), 16)
    trained = build_method(cfg, train.channels, len(train), 16)
    trained.load_state_dict(load_file(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))

    def knn(m):
        kw = dict(mean=cfg.data.mean, std=cfg.data.std, size=16)
        ftr, fte = extract_features(m.encoder, train.images, **kw), extract_features(m.encoder, test.images, **kw)
        return knn_accuracy(ftr, train.labels, fte, test.labels, ks=(200, 20))

    after, before = knn(trained), knn(random_init)
    print(
        f"densecl kNN-200 {after['top1']:.3f} vs random {before['top1']:.3f}; "
        f"kNN-20 {after['top1_k20']:.3f} vs {before['top1_k20']:.3f}"
    )
    assert after["top1"] >= before["top1"] + 0.03
    assert after["top1_k20"] >= before["top1_k20"] + 0.01

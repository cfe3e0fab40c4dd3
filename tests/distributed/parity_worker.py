"""Run by tests/distributed/test_ddp.py under ``torchrun --nproc_per_node=2`` (gloo, CPU).

For every case of parity_cases: one DDP step (SyncBatchNorm on) on this process's B rows, the
loss averaged over processes and the DDP-averaged gradients saved by rank 0 to OUT/<name>.pt.
Then the MoCo queue after one step, and the cross-process shuffled forward, saved the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import parity_cases as pc  # noqa: E402

from selfsup import dist  # noqa: E402
from selfsup.train.loop import distribute  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    assert dist.init_from_env("cpu"), "run me with torchrun --nproc_per_node=2"
    r, w = dist.rank(), dist.world_size()
    cpu = torch.device("cpu")
    for name in pc.CASES:
        method = pc.build(name)
        model = distribute(method, cpu, sync_bn=True)  # the loop's own wrapping
        loss, grads = pc.step(model, pc.shard(pc.global_batch(name, w), r, w))
        mean_loss = dist.all_reduce_mean(torch.tensor([loss]))
        if dist.is_main():
            torch.save({"loss": float(mean_loss), "grads": grads}, out / f"{name}.pt")

    # MoCo v2 with the queue and cross-process shuffled BN: after one step both processes' queues
    # must hold rank 0's keys, then rank 1's
    torch.manual_seed(0)
    import selfsup

    moco = selfsup.create_method(
        "mocov2", backbone="convnet", in_channels=1, width=0.25, queue_size=64, dim=16, bn_groups=2, mlp_hidden=32
    )
    model = distribute(moco, cpu)
    batch = pc.shard(pc.global_batch("simclr", w), r, w)
    model(batch).loss.backward()
    keys = moco._pending[0].clone()  # this process's normalised keys [B, 16]
    moco.on_step_end(0.0)
    everyone = dist.all_gather_object({"keys": keys, "queue": moco.queue.items().clone()})

    # the shuffled forward restores the order: with a BN-free function it equals fn(x) row for row
    from selfsup.nn.shuffle_bn import shuffled_forward

    lin = torch.nn.Linear(4, 3)
    torch.nn.init.constant_(lin.weight, 0.5)  # the same function on both processes
    torch.nn.init.constant_(lin.bias, -1.0)
    x = torch.arange(pc.B * 4, dtype=torch.float32).view(pc.B, 4) + 100 * r
    shuffled = shuffled_forward(lin, x, groups=2)
    shuffle_ok = dist.all_gather_object(bool(torch.allclose(shuffled, lin(x))))
    if dist.is_main():
        torch.save({"ranks": everyone, "shuffle_ok": shuffle_ok}, out / "moco.pt")

    # evaluation's feature extraction: each process a shard (37 images: uneven), gathered in order
    from selfsup.nn.features import extract_features

    feats = extract_features(pc.build("simclr").encoder, pc.eval_images(), [0.5], [0.25], pc.SIZE, batch_size=8)
    if dist.is_main():
        torch.save(feats, out / "features.pt")
    dist.destroy()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Drawing a run's pictures: a method's ``Picture`` (image rows as tensors) and the training curves.
The loop saves both at the end of training; curation and the report draw with the same functions."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup.methods.base import Picture
from selfsup.engine import read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib is imported where a picture is drawn, not here: it costs half a second that
# `import selfsup` (and every CLI call) would otherwise pay


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """RUN_DIR/curves.png: training loss and the online kNN monitor's accuracy against steps."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window: runs go on machines without a display
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    loss = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    knn = [(r["step"], r["monitor/knn20_top1"]) for r in rows if "monitor/knn20_top1" in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if loss:
        ax[0].plot(*zip(*loss), lw=1)
    ax[0].set(xlabel="step", ylabel="loss", title="training loss")
    if knn:
        ax[1].plot(*zip(*[(s, 100 * a) for s, a in knn]), marker="o")
    ax[1].set(xlabel="step", ylabel="top-1 (%)", title="online kNN-20 monitor (validation slice of train)")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out or Path(run_dir) / "curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw(picture: Picture, cell: float = 0.9) -> Figure:
    """A matplotlib Figure of a Picture's image rows, with their captions and the wrapped title."""
    from matplotlib.figure import Figure  # not pyplot's: no global state, nothing to close

    rows, captions, title = picture.rows, picture.captions, picture.title
    cols = max(len(x) for _, x in rows)
    fig = Figure(figsize=(cell * cols + 1.2, (cell + 0.25) * len(rows) + 0.4))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (name, x) in enumerate(rows):
        for b in range(cols):
            ax = axes[r][b]
            ax.set_xticks([])
            ax.set_yticks([])
            if b >= len(x):  # a shorter row
                ax.axis("off")
                continue
            img = x[b].detach().float().clamp(0, 1).cpu().permute(1, 2, 0)
            ax.imshow(img.squeeze(-1).numpy() if img.shape[-1] == 1 else img.numpy(), cmap="gray", vmin=0, vmax=1)
            if captions and captions[r] and b < len(captions[r]):
                ax.set_xlabel(captions[r][b], fontsize=6, labelpad=1)
            if b == 0:
                ax.set_ylabel(name, fontsize=7)
    if title:  # wrapped to the figure's width (~13 characters an inch at 9 pt): a narrow grid cut it off
        width = max(20, int(fig.get_figwidth() * 13))
        fig.suptitle("\n".join(w for line in title.splitlines() for w in textwrap.wrap(line, width)), fontsize=9)
    fig.tight_layout()
    return fig

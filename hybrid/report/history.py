"""The train stage's figure: every member's loss curves, ``OUTPUT/train/history.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hybrid.files import atomic_path

__all__ = ["plot_history"]


def plot_history(out: Path, M: int) -> None:
    """Draw the loss curves of members 0 to M - 1 into ``out/history.png``: each member's
    training loss (solid) and validation relative L2 (dashed) by epoch, as its
    ``out/member-m.pt`` records them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m in range(M):
        path = out / f"member-{m}.pt"
        hist = torch.load(path, map_location="cpu", weights_only=True)["history"].numpy()
        if len(hist):
            ax.semilogy(np.arange(1, len(hist) + 1), hist[:, 0], color=f"C{m}", lw=1,
                        label=f"member {m} train loss")
            ax.semilogy(np.arange(1, len(hist) + 1), hist[:, 1], color=f"C{m}", lw=1, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss: squared rel. error (solid)\nvalidation rel. L2 (dashed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "history.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

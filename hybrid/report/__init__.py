"""Validation reports: the figures of ``hybrid validate``, drawn from plain numpy arrays
(:mod:`~hybrid.report.figures`), and the train stage's loss curves
(:mod:`~hybrid.report.history`).

The scores themselves live in :mod:`hybrid.metrics`; this package only draws.
"""

__all__ = ["figures", "history"]

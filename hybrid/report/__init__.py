"""Validation reports: the figures of ``hybrid validate``, drawn from plain numpy arrays.

The scores themselves live in :mod:`hybrid.metrics`; this package only draws.
"""

__all__ = ["figures"]

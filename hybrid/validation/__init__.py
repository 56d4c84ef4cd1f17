"""Scores of predictions against the reference solver (docs/metrics.md)."""

from hybrid.validation.scores import flow_scores, residual_by_kind, variant_scores

__all__ = ["variant_scores", "flow_scores", "residual_by_kind"]

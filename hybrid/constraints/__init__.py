"""The coupling layer: constraint rows G x = b and the Gaussian update that imposes them."""

__all__ = ["distributed", "flow", "rows", "selection", "update", "variants"]

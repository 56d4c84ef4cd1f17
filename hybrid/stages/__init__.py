"""The commands' stages: solve, train, predict (with the constraint variants), validate, export.

Each stage reuses its outputs when the case sections it reads and its outputs' bytes are
unchanged (:mod:`hybrid.files`); the CLI calls them, nothing below this layer imports them.
"""

__all__ = ["solve", "train", "predict", "constrain", "flow", "validate", "export"]

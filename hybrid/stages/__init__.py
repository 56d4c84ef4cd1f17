"""The commands' stages: solve, train, predict (with the constraint variants of
:mod:`hybrid.constraints.driver`), validate, export.

Each stage reuses its outputs when the case sections it reads and its outputs' bytes are
unchanged (:mod:`hybrid.files`); the CLI and the public API (:mod:`.api`) call them, nothing below
this layer imports them.
"""

__all__ = ["api", "solve", "train", "predict", "external", "validate", "export"]

"""Neural-operator surrogates."""

__all__ = ["boon", "calibration", "data", "fno", "softc", "training", "transfer"]

"""Neural-operator surrogates."""

__all__ = ["boon", "calibration", "data", "fno", "members", "softc", "training", "training_set",
           "transfer"]

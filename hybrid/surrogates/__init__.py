"""Neural-operator surrogates."""

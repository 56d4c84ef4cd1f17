"""The coupling layer: constraint rows G x = b and the Gaussian update that imposes them."""

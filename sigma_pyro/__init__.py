"""sigma-pyro: SIGMA, the semantic Gaussian mixture VAE for sequential recommendation, in Pyro."""

__version__ = "0.1.0"

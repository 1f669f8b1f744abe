"""sigma-pyro: SIGMA, the semantic Gaussian mixture VAE for sequential recommendation, in Pyro."""

__version__ = "0.1.0"

from sigma_pyro.api import SigmaRecommender  # noqa: E402
from sigma_pyro.runtime.allocator import configure_process_memory  # noqa: E402

__all__ = ["SigmaRecommender", "__version__", "configure_process_memory"]

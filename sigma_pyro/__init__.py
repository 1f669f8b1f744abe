"""sigma-pyro: SIGMA, the semantic Gaussian mixture VAE for sequential recommendation, in Pyro."""

__version__ = "0.1.0"

__all__ = ["SigmaRecommender", "__version__", "configure_process_memory"]


def __getattr__(name: str):
    # Loaded on first use, so that `sigma-pyro --help` and `import sigma_pyro.config` do not
    # pay for importing torch and Pyro.
    if name == "SigmaRecommender":
        from sigma_pyro.api import SigmaRecommender

        return SigmaRecommender
    if name == "configure_process_memory":
        from sigma_pyro.runtime.allocator import configure_process_memory

        return configure_process_memory
    raise AttributeError(f"module 'sigma_pyro' has no attribute {name!r}")

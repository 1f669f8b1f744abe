"""Fixtures shared by the whole suite."""

import pyro
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and oversubscribed threads on a busy
    2-core machine make them orders of magnitude slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _clean_param_store():
    """Pyro's parameter store is global: no test may see another's parameters."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()

"""Mixed precision (--mixed-precision): bfloat16 networks, float32 log-densities."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from helpers import make_batch, make_module, traces
from sigma_pyro.inference.precision import autocast_program


def _traces(module, batch, amp: bool):
    guide = autocast_program(module.guide, "cpu", amp)
    model = autocast_program(module.model, "cpu", amp)
    return traces(module, batch, guide=guide, model=model)


@pytest.mark.parametrize("prior", ["sigma", "normal", "gmm", "vamp", "deterministic"])
def test_every_log_density_is_float32_under_mixed_precision(prior):
    module = make_module(prior).eval()
    batch = make_batch(seed=5)
    for trace in _traces(module, batch, amp=True):
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                assert site["log_prob"].dtype == torch.float32, name
                assert torch.isfinite(site["log_prob"]).all(), name


def test_mixed_precision_elbo_is_close_to_the_float32_one():
    module = make_module("sigma").eval()
    batch = make_batch(seed=6)
    losses = {}
    for amp in (False, True):
        pyro.set_rng_seed(0)
        losses[amp] = Trace_ELBO().loss(
            autocast_program(module.model, "cpu", amp),
            autocast_program(module.guide, "cpu", amp),
            batch,
            1.0,
            1.0,
        )
    assert math.isfinite(losses[True])
    # bfloat16 keeps about 3 significant digits in the networks' outputs.
    assert losses[True] == pytest.approx(losses[False], rel=0.02)


def test_training_with_mixed_precision_lowers_the_loss():
    torch.manual_seed(0)
    module = make_module("sigma")
    batch = make_batch(seed=7)
    pyro.set_rng_seed(0)
    svi = pyro.infer.SVI(
        autocast_program(module.model, "cpu", True),
        autocast_program(module.guide, "cpu", True),
        pyro.optim.ClippedAdam({"lr": 0.01}),
        Trace_ELBO(),
    )
    losses = [svi.step(batch, 0.1, 0.2) for _ in range(8)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_mixed_precision_is_a_flag():
    from sigma_pyro.cli.commands.common import config_overrides
    from sigma_pyro.cli.main import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--mixed-precision"])
    assert config_overrides(args)["train"]["mixed_precision"] is True

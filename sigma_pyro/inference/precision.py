"""Optional mixed precision: the networks of the model and guide run under bfloat16
autocast, while every log-density and the backward pass stay in float32.

Pyro evaluates the log-densities of a trace after the model and guide return, so wrapping
only the two programs in autocast leaves ``Trace_ELBO``'s sums, and the backward pass that
SVI starts after them, outside it. The networks cast their outputs that parameterise sample
sites (encoder heads, interests) back to float32, and ``FusedCategorical`` scores float32
logits, so no density is computed in bfloat16.
"""

from __future__ import annotations

import functools

import torch


def autocast_program(program, device: torch.device | str, enabled: bool):
    """``program`` (a model or guide) run under bfloat16 autocast on ``device``; itself when
    not ``enabled``."""
    if not enabled:
        return program
    device_type = torch.device(device).type

    @functools.wraps(program)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return program(*args, **kwargs)

    return run

"""Optional mixed precision: the networks of the model and guide run under bfloat16
autocast, while every log-density and the backward pass stay in float32.

Pyro evaluates the log-densities of a trace after the model and guide return, so wrapping
only the two programs in autocast leaves ``Trace_ELBO``'s sums, and the backward pass that
SVI starts after them, outside it. The networks cast their outputs that parameterise sample
sites (encoder heads, interests) back to float32, and ``FusedCategorical`` scores float32
logits, so no density is computed in bfloat16.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def autocast(device: torch.device | str, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def autocast_program(program, device: torch.device | str, enabled: bool):
    """``program`` (a model or guide) run under :func:`autocast`; itself when disabled."""
    if not enabled:
        return program

    @functools.wraps(program)
    def run(*args, **kwargs):
        with autocast(device, True):
            return program(*args, **kwargs)

    return run

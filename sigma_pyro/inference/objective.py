"""The ELBO term by term, from Pyro traces of the model and guide.

SVI only returns the total loss; for logging and diagnosis we re-run guide and model on one
batch and read each site's log-density off the traces, so the reported terms are exactly the
ones Trace_ELBO optimises.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine

from sigma_pyro.data.batching import SequenceBatch
from sigma_pyro.models.sequential_vae import NOTHING_PRECOMPUTED, Precomputed


def traces(
    module,
    batch: SequenceBatch,
    kl_scale: float = 1.0,
    interest_scale: float = 1.0,
    precomputed: Precomputed = NOTHING_PRECOMPUTED,
):
    """The guide traced and the model replayed against it, log-densities computed: the pair
    Trace_ELBO itself builds, and the one helper everything else that reads sites uses."""
    args = (batch, kl_scale, interest_scale, precomputed)
    guide_trace = poutine.trace(module.guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(module.model, trace=guide_trace)).get_trace(*args)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


def _unscaled(site) -> torch.Tensor:
    scale = site["scale"]
    return site["log_prob_sum"] / (scale if isinstance(scale, (int, float)) else scale.item())


@torch.no_grad()
def elbo_terms(
    module, batch: SequenceBatch, kl_scale: float = 1.0, interest_scale: float = 1.0
) -> dict[str, float]:
    """``nll`` (next item) and ``kl_z`` (one-sample estimate of KL(q(z)||p(z))) per scored
    position (every real position of a whole sequence); when present, ``interest_nll`` per
    position the interest head scored, and the weighted ``orthogonality``, ``balance`` and
    ``sharpness`` penalties per scored position; ``loss`` is the annealed negative ELBO
    being optimised, per scored position."""
    model_trace, guide_trace = traces(module, batch, kl_scale, interest_scale)
    tokens = batch.num_targets
    terms = {"loss": 0.0}
    for site in model_trace.nodes.values():
        if site["type"] != "sample":
            continue
        terms["loss"] -= site["log_prob_sum"].item() / tokens
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            terms["loss"] += site["log_prob_sum"].item() / tokens
    terms["nll"] = -model_trace.nodes["next_item"]["log_prob_sum"].item() / tokens
    terms["kl_z"] = (
        0.0
        if "z" not in model_trace.nodes
        else (_unscaled(guide_trace.nodes["z"]) - _unscaled(model_trace.nodes["z"])).item() / tokens
    )
    if "interest_next_item" in model_trace.nodes:
        # Per position that the (possibly subsampled) interest plate scored.
        site = model_trace.nodes["interest_next_item"]
        terms["interest_nll"] = -_unscaled(site).item() / site["value"].numel()
    for name in ("orthogonality", "balance", "sharpness"):
        if name in model_trace.nodes:
            terms[name] = -model_trace.nodes[name]["log_prob_sum"].item() / tokens
    return terms


def first_non_finite_site(
    module, batch: SequenceBatch, kl_scale: float, interest_scale: float
) -> str | None:
    """Name of the first model or guide site whose log-density is not finite."""
    try:
        # With argument validation on, a NaN parameter raises before any site is recorded,
        # which would hide which site went wrong.
        with pyro.validation_enabled(False):
            model_trace, guide_trace = traces(module, batch, kl_scale, interest_scale)
    except ValueError as err:  # a distribution rejected a NaN parameter
        words = str(err).split()
        name = words[words.index("parameter") + 1] if "parameter" in words else "?"
        return f"a distribution parameter ({name}) is NaN or infinite"
    for trace, side in ((guide_trace, "guide"), (model_trace, "model")):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not math.isfinite(site["log_prob_sum"].item()):
                return f"{side} site {name!r}"
    return None

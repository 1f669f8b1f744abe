"""Per-row quantities of the traces of a batch whose rows repeat each user once per draw:
log-densities summed per row, z and the held-out terms at the last position, and the
prior's spread there."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.util import site_is_subsample


@dataclass
class Layout:
    """Where the real positions of a [rows, L] mask are: each row's last position and, for
    the flat [tokens] sites of the tokens plates, each token's row and each row's last
    token."""

    rows: torch.Tensor
    last: torch.Tensor
    token_rows: torch.Tensor
    last_token: torch.Tensor

    @classmethod
    def of(cls, mask: torch.Tensor) -> Layout:
        lengths = mask.sum(dim=1)
        return cls(
            torch.arange(mask.shape[0], device=mask.device),
            lengths - 1,
            mask.nonzero()[:, 0],
            lengths.cumsum(0) - 1,
        )


def _per_row(site, rows: int, token_rows: torch.Tensor) -> torch.Tensor:
    log_prob = site["log_prob"]
    # Sites of the tokens plates hold one entry per real position, in row-major order.
    if log_prob.dim() == 1 and log_prob.shape[0] == token_rows.shape[0]:
        return torch.zeros(rows, dtype=log_prob.dtype, device=log_prob.device).index_add_(
            0, token_rows, log_prob
        )
    return log_prob.reshape(rows, -1).sum(-1)


def _per_user_sites(trace):
    # Sites outside the user plates (the prototypes' orthogonality factor) depend on neither
    # z nor the user: a constant in every log weight, which self-normalisation cancels.
    for name, site in trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site_is_subsample(site)
            and any(
                frame.name in ("sequences", "tokens", "interest_tokens")
                for frame in site["cond_indep_stack"]
            )
        ):
            yield name, site


def densities(model_trace, guide_trace, at: Layout) -> dict[str, torch.Tensor]:
    """Per row (a user's draw): z at the last position and the log-densities of the draw."""
    rows = at.rows.shape[0]
    log_joint = sum(_per_row(s, rows, at.token_rows) for _, s in _per_user_sites(model_trace))
    log_guide = sum(_per_row(s, rows, at.token_rows) for _, s in _per_user_sites(guide_trace))
    heldout = model_trace.nodes["next_item"]["log_prob"][at.last_token]
    # The interest head (SIGMA's MIE term) observes the last target too.
    heldout_terms = heldout.clone()
    if "interest_next_item" in model_trace.nodes:
        interest = model_trace.nodes["interest_next_item"]["log_prob"]
        heldout_terms += interest[at.last_token] if interest.shape[0] != rows else interest
    z = guide_trace.nodes["z"]
    return {
        "z": z["value"][at.rows, at.last],
        "log_joint": log_joint,
        "log_guide": log_guide,
        "heldout_loglik": heldout,
        "heldout_terms": heldout_terms,
        "kl_last": z["log_prob"][at.rows, at.last]
        - model_trace.nodes["z"]["log_prob"][at.rows, at.last],
    }


def _unmasked(fn):
    while isinstance(fn, MaskedDistribution):
        fn = fn.base_dist
    return fn


def _mixture(fn):
    """The MixtureSameFamily inside a (masked, expanded) prior, or None."""
    while not isinstance(fn, dist.MixtureSameFamily):
        fn = getattr(fn, "base_dist", None)
        if fn is None:
            return None
    return fn


def mixture_at(
    mixture, rows: torch.Tensor, last: torch.Tensor, z_last: torch.Tensor, per_draw
) -> dict:
    """Weights, responsibilities and spreads at the last position only. The components are
    rebuilt there from their means and scales: every mixture prior here has diagonal
    Gaussian components, and evaluating them at all positions would cost L times more."""
    weights = mixture.mixture_distribution
    probs = weights.probs[rows, last]  # [rows, K]
    loc = mixture.component_distribution.mean[rows, last]  # [rows, K, D]
    scale = mixture.component_distribution.stddev[rows, last]
    log_density = dist.Normal(loc, scale).to_event(1).log_prob(z_last.unsqueeze(-2))
    responsibility = torch.softmax(weights.logits[rows, last] + log_density, dim=-1)
    # Law of total variance over the components.
    mean = (probs.unsqueeze(-1) * loc).sum(-2)
    second_moment = (probs.unsqueeze(-1) * (scale.square() + loc.square())).sum(-2)
    prior_scale = (second_moment - mean.square()).clamp_min(0).sqrt().mean(-1)
    k, d = loc.shape[-2:]
    pairs = max(k * (k - 1), 1)
    separation = torch.cdist(loc, loc).sum((-2, -1)) / pairs / math.sqrt(d) / scale.mean((-2, -1))
    return {
        "responsibility": per_draw(responsibility),
        "mixture_weights": per_draw(probs)[:, 0],
        "component_scale": per_draw(scale.mean(-1))[:, 0],
        "prior_scale": per_draw(prior_scale)[:, 0],
        "component_separation": per_draw(separation)[:, 0],
    }


def prior_spread(model_trace, at: Layout, z_last: torch.Tensor, per_draw) -> dict:
    prior = model_trace.nodes["z"]["fn"]
    mixture = _mixture(prior)
    if mixture is None:
        return {"prior_scale": per_draw(_unmasked(prior).stddev[at.rows, at.last].mean(-1))[:, 0]}
    return mixture_at(mixture, at.rows, at.last, z_last, per_draw)

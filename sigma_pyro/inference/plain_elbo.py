"""The SIGMA objective written without Pyro, in plain PyTorch with torch.distributions.

It exists to measure what the probabilistic-programming layer costs (``sigma-pyro bench``
reports the Pyro / plain time ratio) and to check that the Pyro program optimises exactly
this objective: it draws the random variables in the guide's order with the same
distributions, so under the same seed it returns the same value as ``Trace_ELBO().loss``.
"""

from __future__ import annotations

import torch
from torch import distributions as td
from torch.nn import functional as F

from sigma_pyro.data.batching import SequenceBatch
from sigma_pyro.models.sequential_vae import scored_interests
from sigma_pyro.nn.interests import balance_penalty, sharpness_penalty
from sigma_pyro.nn.output_layer import linear_cross_entropy


def _prior(module, loc_shape, interests, device):
    if interests is None:
        return td.Independent(td.Normal(torch.zeros(loc_shape, device=device), 1.0), 1)
    components = td.Independent(td.Normal(interests.component_loc, interests.scale), 1)
    return td.MixtureSameFamily(td.Categorical(probs=interests.intensity), components)


def plain_negative_elbo(
    module, batch: SequenceBatch, kl_scale: float = 1.0, interest_scale: float = 1.0
) -> torch.Tensor:
    """Single-sample annealed negative ELBO of the batch (full-softmax likelihood, and the
    standard normal or semantic mixture prior)."""
    if module.config.prior not in ("normal", "sigma") or module.config.likelihood != "full":
        raise ValueError(
            "the plain objective covers the normal and sigma priors with the "
            "full-softmax likelihood"
        )
    mask = batch.mask
    loc, scale = module.encode(batch.items)
    q_z = td.Independent(td.Normal(loc, scale), 1)
    z = q_z.rsample()
    loss = torch.zeros((), device=loc.device)
    interests = None
    if module.prior.requires_interests:
        interests = module.extract_interests(batch.items, mask)
        loss = loss + interest_scale * _interest_nll(module, batch, interests)
    kl = q_z.log_prob(z) - _prior(module, loc.shape, interests, loc.device).log_prob(z)
    loss = loss + kl_scale * kl[mask].sum()
    representation = module.decode(z, mask.sum(dim=1))[batch.scored]
    # The same fused output layer as the Pyro model's likelihood, so that the time ratio
    # compares the probabilistic-programming layer and nothing else.
    loss = (
        loss
        + linear_cross_entropy(
            representation,
            module.item_embedding.weight[1:],
            module.item_bias,
            batch.targets[batch.scored] - 1,
            module.logits_workspace,
        ).sum()
    )
    if interests is not None:
        loss = loss + representation.shape[0] * _penalties(module, interests, mask)
    return loss


def _interest_nll(module, batch: SequenceBatch, interests) -> torch.Tensor:
    """As SequentialVAEModel.interest_head: a random subset of positions while training,
    scaled up to all of them."""
    mask = batch.mask
    loc, targets = scored_interests(module.config, batch, interests)
    size, total = module.config.interest_subsample, targets.shape[0]
    weight = 1.0
    if module.training and 0 < size < total:
        chosen = torch.randperm(total, device=mask.device)[:size]
        loc, targets, weight = loc[chosen], targets[chosen], total / size
    return weight * F.cross_entropy(module.interest_logits(loc), targets, reduction="sum")


def _penalties(module, interests, mask: torch.Tensor) -> torch.Tensor:
    config, extractor = module.config, module.interests
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = mask.sum(dim=1) - 1
    return (
        config.orthogonality_weight * extractor.orthogonality_penalty()
        + config.balance_weight * balance_penalty(interests.intensity[rows, last])
        + config.sharpness_weight * sharpness_penalty(interests.assignment, mask)
    )

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
from sigma_pyro.nn.output_layer import linear_cross_entropy


def _prior(module, loc_shape, interests, device):
    if interests is None:
        return td.Independent(td.Normal(torch.zeros(loc_shape, device=device), 1.0), 1)
    components = td.Independent(td.Normal(interests.loc, interests.scale), 1)
    return td.MixtureSameFamily(td.Categorical(probs=interests.intensity), components)


def plain_negative_elbo(module, batch: SequenceBatch, kl_scale: float = 1.0,
                        interest_scale: float = 1.0) -> torch.Tensor:
    """Single-sample annealed negative ELBO of the batch (full-softmax likelihood, and the
    standard normal or semantic mixture prior)."""
    if module.config.prior not in ("normal", "sigma") or module.config.likelihood != "full":
        raise ValueError("the plain objective covers the normal and sigma priors with the "
                         "full-softmax likelihood")
    mask = batch.mask
    num_sequences = mask.shape[0]
    loc, scale = module.encode(batch.items)
    loss = torch.zeros((), device=loc.device)
    interests = None
    if module.prior.requires_interests:
        interests = module.extract_interests(batch.items, mask)
        rows = torch.arange(num_sequences, device=mask.device)
        size = module.config.interest_subsample
        if module.training and 0 < size < num_sequences:
            # As SigmaModule.interest_plate: a random subset, scaled up to the whole batch.
            rows = torch.randperm(num_sequences, device=mask.device)[:size]
            interest_scale = interest_scale * num_sequences / size
        last = mask[rows].sum(dim=1) - 1
        q_h = td.Independent(td.Normal(interests.loc[rows, last], interests.scale[rows, last]), 2)
        h = q_h.rsample()
        p_h = td.Independent(td.Normal(torch.zeros_like(h), 1.0), 2)
        interest_nll = F.cross_entropy(module.interest_logits(h), batch.targets[rows, last] - 1,
                                       reduction="sum")
        loss = loss + interest_scale * ((q_h.log_prob(h) - p_h.log_prob(h)).sum() + interest_nll)
    q_z = td.Independent(td.Normal(loc, scale), 1)
    z = q_z.rsample()
    kl = (q_z.log_prob(z) - _prior(module, loc.shape, interests, loc.device).log_prob(z))
    loss = loss + kl_scale * kl[mask].sum()
    representation = module.decode(z)[mask]
    # The same fused output layer as the Pyro model's likelihood, so that the time ratio
    # compares the probabilistic-programming layer and nothing else.
    loss = loss + linear_cross_entropy(representation, module.item_embedding.weight[1:],
                                       module.item_bias, batch.targets[mask] - 1,
                                       module.logits_workspace).sum()
    if interests is not None and module.config.orthogonality_weight > 0:
        loss = loss + (module.config.orthogonality_weight * representation.shape[0]
                       * module.interests.orthogonality_penalty())
    return loss

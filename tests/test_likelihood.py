"""The sampled-softmax likelihood estimates the full softmax."""

import math

import pyro
import torch

from sigma_pyro.config import ModelConfig
from sigma_pyro.nn.module import SigmaModule


def test_sampled_softmax_estimates_full_softmax():
    torch.manual_seed(0)
    num_items, negatives = 40, 50_000
    module = SigmaModule(
        num_items,
        ModelConfig(
            prior="normal",
            hidden_size=8,
            num_heads=2,
            max_seq_length=5,
            likelihood="sampled",
            negatives=negatives,
        ),
    )
    module.set_sampling_counts(torch.randint(1, 50, (num_items,)).float())
    with torch.no_grad():
        module.item_bias.normal_()
        representation = torch.randn(6, 8)
        targets = torch.randint(0, num_items, (6,))
        full = torch.nn.functional.cross_entropy(
            module.item_logits(representation), targets, reduction="none"
        )
        # One batch of negatives is shared by every row, so a single draw shifts all rows
        # together (by about 0.01 at this size); the mean of 8 draws is well inside 0.02.
        sampled = torch.stack(
            [
                -module.sampled_logits(representation, targets, negatives).log_softmax(-1)[:, 0]
                for _ in range(8)
            ]
        ).mean(0)
    # With -log Q corrections the negatives' log-sum-exp estimates n (Z - e^s_target): the
    # accidental hits of the target are removed. So the sampled loss is the full one plus
    # log(n Q(target)), a constant in the parameters, plus log(1 - p + p / (n Q)) for the
    # target's probability p, which vanishes on a real catalog (p and 1 / (n Q) small) but
    # not on this 40-item one.
    offset = math.log(negatives) + module.sampling_log_q[targets]
    p = torch.exp(-full)
    n_q = negatives * module.sampling_log_q[targets].exp()
    expected = full + torch.log(1 - p + p / n_q)
    assert torch.allclose(sampled - offset, expected, atol=0.02), (sampled - offset, expected)


def test_sampled_logits_remove_accidental_hits():
    torch.manual_seed(1)
    module = SigmaModule(3, ModelConfig(hidden_size=8, num_heads=2, max_seq_length=5))
    logits = module.sampled_logits(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]), 50)
    assert torch.isfinite(logits[:, 0]).all()
    # 50 draws over 3 items hit every row's own target, which must be masked out.
    assert (logits[:, 1:] == float("-inf")).any(dim=1).all()


def test_sampled_likelihood_trains():
    import numpy as np
    from pyro.infer import SVI, Trace_ELBO

    from sigma_pyro.data.batching import TrainingBatches

    pyro.set_rng_seed(0)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 31, size=8) for _ in range(64)]
    module = SigmaModule(
        30,
        ModelConfig(
            hidden_size=16, num_heads=2, max_seq_length=8, likelihood="sampled", negatives=16
        ),
    )
    svi = SVI(module.model, module.guide, pyro.optim.ClippedAdam({"lr": 1e-2}), Trace_ELBO())
    batch = next(iter(TrainingBatches(seqs, 64, 8, shuffle=False)))
    losses = [svi.step(batch, 1e-3, 0.1) for _ in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])

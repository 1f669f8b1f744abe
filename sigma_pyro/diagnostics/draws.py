"""Guide draws for a sample of users, with every per-draw quantity the diagnostics need.

Each user's batch row is the whole sequence with the held-out (test) item as the final
target: inputs x_1..x_{n-1}, targets x_2..x_n, the training layout. The guide is causal and
computes the interests from the inputs, so its draws never see the held-out item, and the
decoder's prediction at the last position is the model's p(held-out | history, z).

Each row is repeated S times, so one guide trace gives S independent draws and one replayed
model trace scores them all (the deterministic encoder and interest extractor still run once
per user); log-densities are the traces' per-site ``log_prob``, exactly what Trace_ELBO
reads, unannealed (KL and interest weights 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.poutine.util import site_is_subsample

from sigma_pyro.data.batching import SequenceBatch, pad_right
from sigma_pyro.diagnostics.calibration import UserCalibration, score_users
from sigma_pyro.inference.objective import traces
from sigma_pyro.models.sequential_vae import Precomputed

# Floats per tensor a chunk of rows may hold (the [tokens, items] logits and the
# [rows, L, K, D] interest tensors are the big ones): 128 MiB.
_CHUNK_FLOATS = 2**25


@dataclass
class ModelDraws:
    """Per user (U) and draw (S) of one model. Mixture fields are None for a prior that is
    not a mixture."""

    z: np.ndarray  # [U, S, D] z at the last position
    mixture_weights: np.ndarray | None  # [U, K] prior mixture weights at the last position
    component_scale: np.ndarray | None  # [U, K] mean scale of each prior component
    responsibility: np.ndarray | None  # [U, S, K] posterior share of each component in z_s
    component_separation: np.ndarray | None  # [U] mean distance between component means,
    # per dimension, in units of component scale
    log_joint: np.ndarray  # [U, S] log p(x, z_s), x including the held-out item
    log_guide: np.ndarray  # [U, S] log q(z_s | x)
    heldout_loglik: np.ndarray  # [U, S] log p(held-out | history, z_s), the decoder's
    heldout_terms: np.ndarray  # [U, S] every model term that observes the held-out item
    kl_last: np.ndarray  # [U, S] log q(z_s) - log p(z_s) at the last position
    prior_scale: np.ndarray  # [U] the prior's standard deviation of z, mean over D
    predicted: np.ndarray  # [U, S] a next item drawn from each z_s (internal ids)
    calibration: UserCalibration
    latent_dim: int

    @property
    def log_weight(self) -> np.ndarray:
        return self.log_joint - self.log_guide

    @property
    def guide_scale(self) -> np.ndarray:
        """[U] standard deviation of the z draws at the last position, mean over D."""
        return self.z.std(axis=1).mean(axis=-1)


def _once_per_user(module, items: torch.Tensor, mask: torch.Tensor, samples: int) -> Precomputed:
    """The encoder and the interest extractor are deterministic functions of the history:
    run on one row per user and repeated for its S draws, not S times over. The exact full
    softmax: a sampled softmax is a training-time estimate whose noise would pass for
    importance-weight variance."""

    def repeat(tensor):
        return tensor.repeat_interleave(samples, 0)

    one_row = slice(None, None, samples)
    interests = None
    if module.prior.requires_interests:
        once = module.extract_interests(items[one_row], mask[one_row])
        interests = type(once)(*(repeat(getattr(once, f.name)) for f in dataclasses.fields(once)))
    return Precomputed(
        encoding=tuple(map(repeat, module.encode(items[one_row]))),
        interests=interests,
        likelihood="full",
    )


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


def _mixture_at(
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


@torch.no_grad()
def _draw_chunk(
    module,
    sequences: list[np.ndarray],
    samples: int,
    ks: tuple[int, ...],
    mask_history: bool,
) -> dict:
    device = next(module.parameters()).device
    users = len(sequences)
    window = module.config.max_seq_length
    items = pad_right([s[:-1] for s in sequences], window)
    targets = pad_right([s[1:] for s in sequences], window)
    items, targets = items.repeat_interleave(samples, 0), targets.repeat_interleave(samples, 0)
    mask = items != 0
    rows = items.shape[0]
    batch = SequenceBatch(items, targets, mask, torch.arange(rows)).to(device)
    precomputed = _once_per_user(module, batch.items, batch.mask, samples)
    model_trace, guide_trace = traces(module, batch, 1.0, 1.0, precomputed)

    mask = batch.mask
    row_index = torch.arange(rows, device=device)
    last = mask.sum(dim=1) - 1
    token_rows = mask.nonzero()[:, 0]
    last_token = mask.sum(dim=1).cumsum(0) - 1

    def per_draw(x):
        return x.reshape(users, samples, *x.shape[1:]).cpu()

    log_joint = sum(_per_row(s, rows, token_rows) for _, s in _per_user_sites(model_trace))
    log_guide = sum(_per_row(s, rows, token_rows) for _, s in _per_user_sites(guide_trace))
    next_item = model_trace.nodes["next_item"]
    heldout = next_item["log_prob"][last_token]
    # The interest head (SIGMA's MIE term) observes the last target too.
    heldout_terms = heldout.clone()
    if "interest_next_item" in model_trace.nodes:
        interest = model_trace.nodes["interest_next_item"]["log_prob"]
        heldout_terms += interest[last_token] if interest.shape[0] != rows else interest
    z = guide_trace.nodes["z"]["value"]
    z_last = z[row_index, last]
    kl_last = (
        guide_trace.nodes["z"]["log_prob"][row_index, last]
        - model_trace.nodes["z"]["log_prob"][row_index, last]
    )

    logits = next_item["fn"].logits[last_token]  # [rows, N], normalised
    predicted = dist.Categorical(logits=logits).sample() + 1
    log_predictive = per_draw(logits).logsumexp(dim=1) - math.log(samples)  # [U, N]
    held_out_items = torch.as_tensor(np.array([s[-1] for s in sequences]))
    histories = pad_right([s[:-1] for s in sequences], max(len(s) - 1 for s in sequences))

    out = {
        "z": per_draw(z_last),
        "log_joint": per_draw(log_joint),
        "log_guide": per_draw(log_guide),
        "heldout_loglik": per_draw(heldout),
        "heldout_terms": per_draw(heldout_terms),
        "kl_last": per_draw(kl_last),
        "predicted": per_draw(predicted),
        "calibration": score_users(
            log_predictive, held_out_items, histories, ks, mask_history, torch.rand(users)
        ),
    }
    prior = model_trace.nodes["z"]["fn"]
    mixture = _mixture(prior)
    if mixture is None:
        out["prior_scale"] = per_draw(_unmasked(prior).stddev[row_index, last].mean(-1))[:, 0]
    else:
        out.update(_mixture_at(mixture, row_index, last, z_last, per_draw))
    return out


def draw_posterior(
    module,
    sequences: list[np.ndarray],
    num_samples: int,
    seed: int,
    ks: tuple[int, ...],
    mask_history: bool = True,
    log=None,
) -> ModelDraws:
    """S guide draws for each full sequence (history + held-out item), scored by the model.

    The global torch RNG and Pyro's parameter store are left as they were."""
    config = module.config
    length = min(config.max_seq_length, max(len(s) - 1 for s in sequences))
    components = max(config.num_interests, config.pseudo_inputs)
    cells = length * (module.num_items + 4 * components * config.hidden_size)
    users_per_chunk = max(1, _CHUNK_FLOATS // (cells * num_samples))
    device = next(module.parameters()).device
    chunks = []
    with (
        module.evaluating(),
        pyro.get_param_store().scope(),
        pyro.validation_enabled(False),
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
    ):
        torch.manual_seed(seed)
        for chunk, start in enumerate(range(0, len(sequences), users_per_chunk)):
            if log is not None and chunk and chunk % 20 == 0:
                log(f"  {start}/{len(sequences)} users")
            chunks.append(
                _draw_chunk(
                    module,
                    sequences[start : start + users_per_chunk],
                    num_samples,
                    ks,
                    mask_history,
                )
            )

    def stacked(key, dtype=np.float64):
        if key not in chunks[0]:
            return None
        return torch.cat([c[key] for c in chunks]).numpy().astype(dtype)

    return ModelDraws(
        z=stacked("z", np.float32),
        mixture_weights=stacked("mixture_weights"),
        component_scale=stacked("component_scale"),
        responsibility=stacked("responsibility"),
        component_separation=stacked("component_separation"),
        log_joint=stacked("log_joint"),
        log_guide=stacked("log_guide"),
        heldout_loglik=stacked("heldout_loglik"),
        heldout_terms=stacked("heldout_terms"),
        kl_last=stacked("kl_last"),
        prior_scale=stacked("prior_scale"),
        predicted=stacked("predicted", np.int64),
        calibration=UserCalibration.concatenate([c["calibration"] for c in chunks]),
        latent_dim=module.latent_dim,
    )

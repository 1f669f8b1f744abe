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

from sigma_pyro.data.batching import SequenceBatch, pad_right
from sigma_pyro.diagnostics.calibration import UserCalibration, score_users
from sigma_pyro.diagnostics.draw_sites import Layout, densities, prior_spread
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


@torch.no_grad()
def _draw_chunk(
    module,
    sequences: list[np.ndarray],
    samples: int,
    ks: tuple[int, ...],
    mask_history: bool,
) -> dict:
    batch = _repeated_batch(module, sequences, samples)
    precomputed = _once_per_user(module, batch.items, batch.mask, samples)
    model_trace, guide_trace = traces(module, batch, 1.0, 1.0, precomputed)
    at = Layout.of(batch.mask)

    def per_draw(x):
        return x.reshape(len(sequences), samples, *x.shape[1:]).cpu()

    per_row = densities(model_trace, guide_trace, at)
    out = {name: per_draw(value) for name, value in per_row.items()}
    logits = model_trace.nodes["next_item"]["fn"].logits[at.last_token]  # [rows, N], normalised
    out["predicted"] = per_draw(dist.Categorical(logits=logits).sample() + 1)
    out["calibration"] = _calibration(sequences, per_draw(logits), ks, mask_history)
    out.update(prior_spread(model_trace, at, per_row["z"], per_draw))
    return out


def _repeated_batch(module, sequences: list[np.ndarray], samples: int) -> SequenceBatch:
    """The full sequences in the training layout, each row repeated once per draw."""
    window = module.config.max_seq_length
    items = pad_right([s[:-1] for s in sequences], window).repeat_interleave(samples, 0)
    targets = pad_right([s[1:] for s in sequences], window).repeat_interleave(samples, 0)
    batch = SequenceBatch(items, targets, items != 0, torch.arange(items.shape[0]))
    return batch.to(next(module.parameters()).device)


def _calibration(
    sequences: list[np.ndarray], logits: torch.Tensor, ks: tuple[int, ...], mask_history: bool
) -> UserCalibration:
    """Rank and PIT of each held-out item under the predictive averaged over the draws
    (``logits`` [U, S, N])."""
    log_predictive = logits.logsumexp(dim=1) - math.log(logits.shape[1])  # [U, N]
    held_out_items = torch.as_tensor(np.array([s[-1] for s in sequences]))
    histories = pad_right([s[:-1] for s in sequences], max(len(s) - 1 for s in sequences))
    return score_users(
        log_predictive, held_out_items, histories, ks, mask_history, torch.rand(len(sequences))
    )


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

"""Research prototype, not library code: SIGMA as a conditional VAE of the next item.

    q(z_t | x_<=t, x_t+1) = N(heads(h_t + W e(x_t+1)))         the guide sees the next item
    p(z_t | x_<=t)        = sum_k pi_tk N(A h_t + M mu_tk, s(h_t) * sigma_tk)   (sigma)
                          = N(A h_t, s(h_t))                                    (normal)
    p(x_t+1 | z_t)        = softmax(LayerNorm(z_t) . E^T + b)   decoder_layers=0: z only

h_t is the guide's causal encoder state of the prefix (shared network), mu_tk, sigma_tk, pi_tk
the MIE part's interests. The decoder cannot bypass z, so the prior must predict: ranking
draws z_last ~ p(z | history) (32 draws, log of the averaged softmax), the other positions'
z at the posterior mean. With "prefix" the script trains the library as it is (baseline).

    cd <worktree at the commit named in the logs> && OMP_NUM_THREADS=1 .venv/bin/python \
        ../main/results/interests/prototype-cvae/cvae.py sigma cvae kl_cap=1.0 [key=value ...]

It patches the model, guide and ranking in place, acceptable for a throwaway experiment only.
"""

import math
import sys
import time

import pyro
import pyro.distributions as dist
import torch
import yaml
from pyro import poutine
from torch import nn
from torch.nn import functional as F

import sigma_pyro.evaluation.evaluate as evaluate
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.config import load_config, nest_overrides
from sigma_pyro.data.batching import pad_right
from sigma_pyro.evaluation.predict import last_position_interests
from sigma_pyro.guides.encoder_guide import TransformerEncoderGuide
from sigma_pyro.models.sequential_vae import SequentialVAEModel

prior_name, design = sys.argv[1], sys.argv[2]
preset = "synthetic"
over = dict(prior=prior_name, progress=False, seed=0)
for arg in sys.argv[3:]:
    key, value = arg.split("=", 1)
    if key == "preset":
        preset = value
    else:
        over[key] = yaml.safe_load(value)
if design == "cvae":
    over.setdefault("decoder_layers", 0)
torch.set_num_threads(1)
cfg = load_config(preset, nest_overrides(over))
SAMPLES = 32


def prefix_state(module, items):
    return module.encoder(module.item_embedding(items))


def conditional_prior(module, h, interests):
    base = module.prior_loc(h).float()
    spread = F.softplus(module.prior_scale(h).float()) + 1e-3
    if interests is None:
        return dist.Normal(base, spread).to_event(1)
    loc = base.unsqueeze(-2) + interests.component_loc
    scale = spread.unsqueeze(-2) * interests.scale
    return dist.MixtureSameFamily(
        dist.Categorical(probs=interests.intensity), dist.Normal(loc, scale).to_event(1)
    )


def posterior(module, h, targets):
    g = h + module.next_embed(module.item_embedding(targets))
    return module.loc_head(g).float(), F.softplus(module.scale_head(g).float()) + 1e-3


def model(self, batch, kl_scale=1.0, interest_scale=1.0, precomputed=None):
    module = self.module
    pyro.module("sigma", module)
    n, length = batch.items.shape
    mask = batch.mask
    interests = (
        module.extract_interests(batch.items, mask) if module.prior.requires_interests else None
    )
    targets = batch.targets[mask] - 1
    if interests is not None:
        self.interest_head(batch, interests, interest_scale)
    h = prefix_state(module, batch.items)
    with pyro.plate("sequences", n, dim=-2), pyro.plate("positions", length, dim=-1):
        with poutine.scale(scale=kl_scale):
            z = pyro.sample("z", conditional_prior(module, h, interests).mask(mask))
    representation = module.decode(z)[mask]
    with pyro.plate("tokens", targets.shape[0]):
        pyro.sample("next_item", module.next_item_distribution(representation), obs=targets)
    if interests is not None:
        self.interest_penalties(interests, mask, targets.shape[0])


def guide(self, batch, kl_scale=1.0, interest_scale=1.0, precomputed=None):
    module = self.module
    pyro.module("sigma", module)
    n, length = batch.items.shape
    loc, scale = posterior(module, prefix_state(module, batch.items), batch.targets)
    with pyro.plate("sequences", n, dim=-2), pyro.plate("positions", length, dim=-1):
        with poutine.scale(scale=kl_scale):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1).mask(batch.mask))


@torch.no_grad()
def prior_predictive_representation(module, histories, device, samples=0):
    items = pad_right(histories, module.config.max_seq_length).to(device)
    mask = items != 0
    rows = torch.arange(items.shape[0], device=device)
    last = mask.sum(dim=1) - 1
    known = torch.zeros_like(items)
    known[:, :-1] = items[:, 1:]  # x_s+1 for s < last; nothing at last
    h = prefix_state(module, items)
    z, _ = posterior(module, h, known)
    interests = module.extract_interests(items, mask) if module.prior.requires_interests else None
    draws = conditional_prior(module, h, interests).sample((SAMPLES,))  # [S, B, L, D]
    z = z.expand(SAMPLES, *z.shape).clone()
    z[:, rows, last] = draws[:, rows, last]
    return module.decode(z.flatten(0, 1)).view(SAMPLES, *h.shape)[:, rows, last]


class ConditionalVAE(SigmaRecommender):
    def build_module(self):
        module = super().build_module()
        d = module.config.hidden_size
        module.next_embed = nn.Linear(d, d)
        module.prior_loc = nn.Linear(d, d)
        module.prior_scale = nn.Linear(d, d)
        return module


if design == "cvae":
    SequentialVAEModel.__call__ = model
    TransformerEncoderGuide.__call__ = guide
    evaluate.last_position_representation = prior_predictive_representation
    recommender = ConditionalVAE(cfg)
else:
    recommender = SigmaRecommender(cfg)
tag = f"{prior_name} {design} {' '.join(sys.argv[3:])}"
started = time.time()
recommender.fit(log=lambda line: print(tag, line, flush=True))
for split in ("valid", "test"):
    scores = recommender.evaluate(split)
    print(tag, split, {k: round(v, 4) for k, v in scores.items() if k in ("ndcg@10", "ndcg@20", "recall@20")})
module = recommender.module
if design == "cvae" and module.interests is not None:
    with torch.no_grad(), module.evaluating():
        histories = recommender.split.valid_history[:2000]
        items = pad_right(histories, module.config.max_seq_length)
        mask = items != 0
        rows, last = torch.arange(items.shape[0]), mask.sum(dim=1) - 1
        h = prefix_state(module, items)[rows, last]
        interests, _ = last_position_interests(module, histories, "cpu")
        loc = module.prior_loc(h).unsqueeze(-2) + interests.component_loc
        scale = (F.softplus(module.prior_scale(h)) + 1e-3).unsqueeze(-2) * interests.scale
        k = loc.shape[1]
        distance = (loc.unsqueeze(1) - loc.unsqueeze(2)).norm(dim=-1)
        rms = scale.pow(2).mean(dim=-1).sqrt().mean(dim=-1)  # [B]
        off = ~torch.eye(k, dtype=torch.bool)
        separation = (distance / rms.view(-1, 1, 1))[:, off].median(dim=-1).values.median()
        print(
            tag,
            "median separation (distance / rms scale)",
            round(float(separation), 3),
            "median largest intensity",
            round(float(interests.intensity.max(dim=-1).values.median()), 3),
        )
print(tag, "done", round(time.time() - started), "s")

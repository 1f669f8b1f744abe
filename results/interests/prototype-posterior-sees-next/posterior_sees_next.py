"""Research prototype, not library code: SIGMA with a posterior that sees the next item.

Runs against revision fdf5c08 (before the guide took precomputed parts as an argument), in a
worktree with its own `make install`:

    git worktree add ../wt-proto fdf5c08 && cd ../wt-proto && make install
    OMP_NUM_THREADS=1 .venv/bin/python ../main/results/interests/prototype-posterior-sees-next/posterior_sees_next.py \
        sigma 1.0 next kl_anneal_steps=100 decoder_layers=0      # and: normal 1.0 next ...,
                                                                   # normal 0.003 prefix

Arguments: prior, kl_cap, mode (next: q(z_t | x_<=t, x_t+1); prefix: today's q(z_t | x_<=t)),
then config overrides. In "next" mode the decoder reads h_t + W z_t (h_t the encoder's causal
state, W initialised near zero) and validation draws z at the last position from the prior
(32 draws, the predictive averaged), so the prior decides the recommendation. It patches
library methods in place, which is acceptable for a throwaway experiment only; see
docs/interests.md for what it showed.
"""
import sys, time, math, json
import torch, pyro
import pyro.distributions as dist
from pyro import poutine
from torch import nn
from torch.nn import functional as F
from sigma_pyro.api import SigmaRecommender
from sigma_pyro.config import load_config, nest_overrides
import sigma_pyro.evaluation.evaluate as E
from sigma_pyro.data.batching import pad_right
from sigma_pyro.guides.encoder_guide import TransformerEncoderGuide
from sigma_pyro.models.priors import PriorInputs

prior, kl, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]   # mode: next | prefix
torch.set_num_threads(1)
over = dict(prior=prior, kl_cap=kl, progress=False, seed=0)
for a in sys.argv[4:]:
    import yaml
    k, v = a.split("="); over[k] = yaml.safe_load(v)
cfg = load_config("synthetic", nest_overrides(over))

def posterior_params(module, items, targets):
    h = module.encoder(module.item_embedding(items))
    module._h = h if mode == "next" else None
    if mode == "next":
        h = h + module.next_embed(module.item_embedding(targets))
    return module.loc_head(h), F.softplus(module.scale_head(h)) + 1e-4

def guide(self, batch, kl_scale=1.0, interest_scale=1.0):
    module = self.module
    pyro.module("sigma", module)
    n, length = batch.items.shape
    loc, scale = posterior_params(module, batch.items, batch.targets)
    with pyro.plate("sequences", n, dim=-2):
        with pyro.plate("positions", length, dim=-1), poutine.scale(scale=kl_scale):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1).mask(batch.mask))
TransformerEncoderGuide.__call__ = guide

S = 32
@torch.no_grad()
def last_rep(module, histories, max_length, device, samples=0):
    items = pad_right(histories, max_length).to(device)
    mask = items != 0
    last = mask.sum(1) - 1
    rows = torch.arange(items.shape[0])
    targets = torch.zeros_like(items); targets[:, :-1] = items[:, 1:]
    loc, scale = posterior_params(module, items, targets)
    if mode == "prefix":
        return module.decode(loc)[rows, last]
    interests = module.extract_interests(items, mask) if module.prior.requires_interests else None
    p = module.prior(PriorInputs(tuple(items.shape), module.latent_dim, interests, device, module))
    draws = p.sample((S,))                                  # [S, B, L, D]
    z = loc.expand(S, *loc.shape).clone()
    z[:, rows, last] = draws[:, rows, last]
    h = module._h
    module._h = None
    out = module.decoder(module.z_proj(z.flatten(0, 1)) + h.repeat(S, 1, 1)).view(S, *loc.shape)
    return out[:, rows, last]
E.last_position_representation = last_rep

class R(SigmaRecommender):
    def build_module(self):
        m = super().build_module()
        m.decoder.dropout = nn.Identity()
        m.next_embed = nn.Linear(m.config.hidden_size, m.config.hidden_size)
        dec = m.decode
        m.z_proj = nn.Linear(m.config.hidden_size, m.config.hidden_size)
        nn.init.normal_(m.z_proj.weight, std=0.01)
        m.decode = lambda z: dec(m.z_proj(z) if m._h is None else m.z_proj(z) + (m._h if z.dim() == m._h.dim() else m._h.repeat(z.shape[0] // m._h.shape[0], 1, 1)))
        return m

rec = R(cfg)
t0 = time.time()
tag = f"{prior} kl={kl} {mode} {' '.join(sys.argv[4:])}"
rec.fit(log=lambda l: print(tag, l, flush=True))
m = rec.module
print(tag, "valid", {k: round(v, 4) for k, v in rec.evaluate("valid").items() if k in ("ndcg@10", "recall@20")})
print(tag, "test", {k: round(v, 4) for k, v in rec.evaluate("test").items() if k in ("ndcg@10", "recall@20")})
if m.interests is not None:
    split = rec.split
    from sigma_pyro.predict import last_position_interests
    it, _ = last_position_interests(m, split.valid_history[:2000], cfg.model.max_seq_length, "cpu")
    mu, sc = it.component_loc, it.scale                       # [B, K, D]
    d = (mu.unsqueeze(1) - mu.unsqueeze(2)).norm(dim=-1)       # [B, K, K]
    s = sc.norm(dim=-1) / math.sqrt(mu.shape[-1])              # rms scale [B, K]
    K = mu.shape[1]
    off = ~torch.eye(K, dtype=torch.bool)
    sep = (d / s.mean(-1, keepdim=True).unsqueeze(-1))[:, off].median(-1).values.median()
    print(tag, "median separation (dist / rms scale)", float(sep), "intensity max median", float(it.intensity.max(-1).values.median()))
print(tag, "done", round(time.time() - t0))

"""The SIGMA module: the neural networks, with the Pyro model and guide that use them.

As in scvi-tools, the module owns every parameter; the model (``sigma_pyro.models``) and
the guide (``sigma_pyro.guides``) are separate callables with one argument signature that
register the same module with ``pyro.module``, so SVI optimises all parameters at once.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from sigma_pyro.config import ModelConfig
from sigma_pyro.data.dataset import PADDING_ID
from sigma_pyro.models.priors import build_prior
from sigma_pyro.nn.distributions import OutputLayerCategorical
from sigma_pyro.nn.interests import InterestExtractor, Interests
from sigma_pyro.nn.output_layer import LogitsWorkspace
from sigma_pyro.nn.transformer import CausalTransformer

_MIN_SCALE = 1e-4
_INITIAL_SCALE_BIAS = -3.0  # softplus(-3) ~ 0.05
# Floor of a learned interest-head temperature: logits within +-100 of each other.
MIN_INTEREST_TEMPERATURE = 0.01


def real_lengths(items: torch.Tensor) -> torch.Tensor:
    """The number of real (non-padding) positions of each right-padded row [B, L]."""
    return (items != PADDING_ID).sum(dim=-1)


class SigmaModule(nn.Module):
    """Item embeddings (shared by encoder, decoder output layer and interest module), the
    causal transformer encoder of the guide, the decoder, the interest extractor and the
    prior over z."""

    def __init__(self, num_items: int, config: ModelConfig):
        super().__init__()
        from sigma_pyro.guides.encoder_guide import TransformerEncoderGuide
        from sigma_pyro.models.sequential_vae import SequentialVAEModel

        d = config.hidden_size
        self.num_items = num_items
        self.config = config
        self.item_embedding = nn.Embedding(num_items + 1, d, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.item_bias = nn.Parameter(torch.zeros(num_items))
        # log Q(item) of the negative sampler (sampled likelihood); popularity once
        # set_sampling_counts is called, uniform until then. Saved with the weights.
        self.register_buffer("sampling_log_q", torch.full((num_items,), -math.log(num_items)))
        self.encoder = CausalTransformer(
            d,
            config.num_layers,
            config.num_heads,
            config.max_seq_length,
            config.hidden_dropout,
            config.attention_dropout,
            position_encoding=config.position_encoding,
            frequency_mix=config.frequency_mix,
            frequency_bins=config.frequency_bins,
        )
        self.loc_head = nn.Linear(d, d)
        self.scale_head = nn.Linear(d, d)
        # Start with a nearly deterministic encoder: with unit posterior noise the decoder
        # sees mostly noise and learning stalls before the KL term can shape anything.
        nn.init.constant_(self.scale_head.bias, _INITIAL_SCALE_BIAS)
        self.decoder = CausalTransformer(
            d,
            config.decoder_layers,
            config.num_heads,
            config.max_seq_length,
            config.hidden_dropout,
            config.attention_dropout,
            input_dropout=config.decoder_input_dropout,
            position_encoding=config.position_encoding,
            frequency_mix=config.frequency_mix,
            frequency_bins=config.frequency_bins,
        )
        self.prior = build_prior(config)
        self.interest_embedding = None
        self.interests = (
            InterestExtractor(
                d,
                config.num_interests,
                config.assignment_temperature,
                trainable_prototypes=config.train_prototypes,
                learn_temperature=config.learn_assignment_temperature,
                decay=config.interest_decay,
            )
            if self.prior.requires_interests
            else None
        )
        if self.interests is not None:
            log_temperature = torch.tensor(math.log(config.interest_temperature))
            if config.learn_interest_temperature:
                self.interest_log_temperature = nn.Parameter(log_temperature)
            else:
                # Not persistent: a fixed temperature is the config's, and checkpoints written
                # before it could be learned load unchanged.
                self.register_buffer("interest_log_temperature", log_temperature, persistent=False)
        if self.interests is not None and config.interest_embedding != "shared":
            # The interest head's cosine geometry pulls item vectors into clusters, which
            # fights the main head's dot-product geometry when both use one table.
            self.interest_embedding = (
                nn.Linear(d, d)
                if config.interest_embedding == "projected"
                else nn.Embedding(num_items + 1, d, padding_idx=0)
            )
            if config.interest_embedding == "separate":
                nn.init.normal_(self.interest_embedding.weight, std=0.02)
        self.logits_workspace = LogitsWorkspace()
        self.model = SequentialVAEModel(self)
        self.guide = TransformerEncoderGuide(self)

    @contextmanager
    def evaluating(self):
        """Eval mode (no dropout) for the duration; the caller's mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    @property
    def latent_dim(self) -> int:
        return self.config.hidden_size

    def encode(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z_t | x_<=t) for every position, each [B, L, D]."""
        return self.encode_vectors(self.item_embedding(items), real_lengths(items))

    def encode_vectors(
        self, vectors: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The guide's encoder applied to input vectors [B, L, D] instead of item ids, for
        priors built from the guide itself (VampPrior's pseudo-sequences, all positions
        real: ``lengths`` None)."""
        h = self.encoder(vectors, lengths)
        # float(): under mixed precision the heads run in bfloat16, but q(z) is a density.
        loc = self.loc_head(h).float()
        if not self.prior.stochastic:
            return loc, torch.zeros_like(loc)
        return loc, F.softplus(self.scale_head(h).float()) + _MIN_SCALE

    def decode(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Representation [B, L, D] used to score the next item; causal over z_<=t.
        ``lengths`` [B] are the real positions of each row, as ``real_lengths`` of the
        items z was encoded from."""
        return self.decoder(z, lengths)

    def item_logits(
        self, representation: torch.Tensor, start: int = 1, stop: int | None = None
    ) -> torch.Tensor:
        """Scores of internal items start..stop-1 (padding excluded by default)."""
        stop = self.num_items + 1 if stop is None else stop
        weight = self.item_embedding.weight[start:stop]
        bias = self.item_bias[start - 1 : stop - 1]
        if representation.dim() == 2:
            # One fused kernel instead of a matmul and a pass over [positions x items].
            return torch.addmm(bias, representation, weight.T)
        return representation @ weight.T + bias

    def next_item_distribution(self, representation: torch.Tensor) -> OutputLayerCategorical:
        """The full-softmax likelihood p(next item | representation [M, D]) over all items."""
        return OutputLayerCategorical(
            representation, self.item_embedding.weight[1:], self.item_bias, self.logits_workspace
        )

    def set_sampling_counts(self, counts: torch.Tensor) -> None:
        """Popularity sampler for negatives: Q(item) proportional to its training count + 1."""
        smoothed = counts.to(self.sampling_log_q) + 1.0
        self.sampling_log_q.copy_((smoothed / smoothed.sum()).log())

    def sampled_logits(
        self, representation: torch.Tensor, targets: torch.Tensor, num_negatives: int
    ) -> torch.Tensor:
        """Sampled-softmax logits [M, 1 + N]: the target in column 0, then N negatives drawn
        from Q and shared by the batch, all corrected by -log Q (Jean et al. 2015) so the
        softmax over the sample estimates the full one. A negative that is the row's own
        target is removed (-inf), or it would count the target as its own competitor.

        ``targets`` are classes 0..num_items-1 (internal id - 1)."""
        negatives = torch.multinomial(self.sampling_log_q.exp(), num_negatives, replacement=True)
        weight = self.item_embedding.weight[1:]
        positive = (representation * weight[targets]).sum(-1) + self.item_bias[targets]
        negative = representation @ weight[negatives].T + self.item_bias[negatives]
        logits = torch.cat(
            [
                (positive - self.sampling_log_q[targets]).unsqueeze(-1),
                negative - self.sampling_log_q[negatives],
            ],
            dim=-1,
        )
        accidental = negatives.unsqueeze(0) == targets.unsqueeze(-1)
        return logits.masked_fill(
            torch.cat([torch.zeros_like(accidental[:, :1]), accidental], dim=-1), float("-inf")
        )

    def interest_plate(self, num_positions: int):
        """The plate of the interest head's scored positions. While training it subsamples
        ``interest_subsample`` of them, scaled up by Pyro to an unbiased estimate: each costs
        a [K x items] score matrix, K times a position of the main likelihood."""
        size = self.config.interest_subsample
        subsample = size if self.training and 0 < size < num_positions else None
        return pyro.plate("interest_tokens", num_positions, subsample_size=subsample)

    def interest_item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """The vectors [..., D] the multi-interest part sees for internal item ids."""
        if isinstance(self.interest_embedding, nn.Embedding):
            return self.interest_embedding(items)
        vectors = self.item_embedding(items)
        return vectors if self.interest_embedding is None else self.interest_embedding(vectors)

    def extract_interests(self, items: torch.Tensor, mask: torch.Tensor) -> Interests:
        return self.interests(self.interest_item_vectors(items), mask)

    def interests_after(self, items: torch.Tensor, mask: torch.Tensor) -> Interests:
        """The interests after each whole history (the last position's), cheaply."""
        return self.interests.at_last(self.interest_item_vectors(items), mask)

    def interest_logits(
        self, interest_vectors: torch.Tensor, start: int = 1, stop: int | None = None
    ) -> torch.Tensor:
        """Scores of internal items start..stop-1 from K interest vectors [M, K, D]: the
        best-matching interest decides, by cosine similarity over a temperature (the MIE-VAE
        scoring rule)."""
        stop = self.num_items + 1 if stop is None else stop
        ids = torch.arange(start, stop, device=interest_vectors.device)
        cosine = self.interest_cosine(interest_vectors, ids)
        # max() back-propagates through the winning interest only; amax() would split
        # gradients over ties and costs several times more.
        return cosine.max(dim=-2).values / self.interest_temperature

    @property
    def interest_temperature(self) -> torch.Tensor:
        return self.interest_log_temperature.exp().clamp_min(MIN_INTEREST_TEMPERATURE)

    def interest_cosine(self, interest_vectors: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [..., K, N] of K interest vectors [..., K, D] to the items
        with internal ids ``items``, [N] (the same items for every row) or [..., N]."""
        vectors = F.normalize(self.interest_item_vectors(items), dim=-1)
        return F.normalize(interest_vectors, dim=-1) @ vectors.transpose(-1, -2)

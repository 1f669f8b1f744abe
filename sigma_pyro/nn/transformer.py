"""A causal (left-to-right) pre-norm transformer, the backbone of encoder and decoder."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sigma_pyro.config.checks import POSITION_ENCODINGS
from sigma_pyro.nn.dropout import Dropout


def low_pass_kernel(window: int, bins: int) -> torch.Tensor:
    """Weights [window] by distance d back from the filtered position: the last row of the
    projection onto the ``bins`` lowest frequencies of a real FFT over ``window`` steps.

    BSARec filters each left-padded prefix sample with that FFT and reads the result at the
    window's last index, which is exactly this kernel applied to the items d steps back.
    The FFT over a whole right-padded sequence would let position t see later items."""
    distance = torch.arange(window, dtype=torch.float64)
    frequencies = torch.arange(1, bins, dtype=torch.float64)
    # Bin 0 once; every other kept bin with its mirror image (their sum is real).
    waves = torch.cos(2 * math.pi * frequencies.unsqueeze(1) * distance / window)
    weight = 1.0 + 2.0 * waves.sum(0)
    if bins > 1 and window % 2 == 0 and bins - 1 == window // 2:
        weight -= waves[-1]  # the Nyquist bin has no mirror image
    return (weight / window).float()


class CausalFrequencyFilter(nn.Module):
    """BSARec's frequency rescaler made causal: ``low + beta^2 * (x - low)``, where ``low``
    at position t is the low-pass kernel over positions t, t-1, ... (nothing before the
    sequence's start) and ``beta`` is learned per feature, rescaling the high frequencies."""

    def __init__(self, hidden_size: int, max_length: int, bins: int):
        super().__init__()
        kernel = low_pass_kernel(max_length, bins)
        positions = torch.arange(max_length)
        distance = positions.unsqueeze(1) - positions.unsqueeze(0)  # [L, L]: t - j
        mixing = torch.where(distance >= 0, kernel[distance.clamp_min(0)], 0.0)
        # Not saved: rebuilt from the settings, so it cannot drift from them.
        self.register_buffer("mixing", mixing, persistent=False)
        # BSARec draws sqrt_beta from N(0, 1); at 1 the filter starts as the identity, so
        # a block starts as attention mixed with its own input rather than with noise.
        self.sqrt_beta = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        low = torch.einsum("tj,bjd->btd", self.mixing[:length, :length].to(x.dtype), x)
        return low + self.sqrt_beta.square() * (x - low)


class CausalSelfAttentionBlock(nn.Module):
    """One pre-norm transformer block. Attention and hidden dropout are separate settings
    because the published presets use different values for them.

    With ``frequency_mix`` alpha > 0 the token mixer is BSARec's: alpha times the causal
    frequency filter plus 1 - alpha times attention, both of the same normed input."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        hidden_dropout: float,
        attention_dropout: float,
        frequency_mix: float,
        max_length: int,
        frequency_bins: int,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.norm_attention = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.norm_ffn = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size),
            nn.GELU(),
            Dropout(hidden_dropout),
            nn.Linear(4 * hidden_size, hidden_size),
        )
        self.dropout = Dropout(hidden_dropout)
        self.frequency_mix = frequency_mix
        self.frequency_filter = (
            CausalFrequencyFilter(hidden_size, max_length, frequency_bins)
            if frequency_mix > 0
            else None
        )

    def forward(self, x: torch.Tensor, distance_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``distance_bias`` [H, L, L] is added to the attention logits, -inf above the
        diagonal; without it attention is plainly causal."""
        batch, length, width = x.shape
        normed = self.norm_attention(x)
        q, k, v = self.qkv(normed).chunk(3, dim=-1)
        heads = lambda t: t.view(batch, length, self.num_heads, -1).transpose(1, 2)  # noqa: E731
        # is_causal, or the -inf of distance_bias above the diagonal, is the whole leakage
        # guarantee: position t attends to positions <= t.
        attended = F.scaled_dot_product_attention(
            heads(q),
            heads(k),
            heads(v),
            attn_mask=None if distance_bias is None else distance_bias.to(q.dtype),
            is_causal=distance_bias is None,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        mixed = self.attention_out(attended.transpose(1, 2).reshape(batch, length, width))
        if self.frequency_filter is not None:
            alpha = self.frequency_mix
            mixed = alpha * self.frequency_filter(normed) + (1 - alpha) * mixed
        x = x + self.dropout(mixed)
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class CausalTransformer(nn.Module):
    """Position information, a stack of causal blocks and a final layer norm.

    ``position_encoding`` "absolute" adds a learned embedding of each item's index in the
    window, counted from its start. "recency" counts the index back from the sequence's
    last real item instead, which is what SASRec's left padding amounts to: at ranking the
    last position is always index 0. (In training, position t's index tells how many items
    of the sequence follow it, though not which.) "relative" adds none; instead each head's
    attention logits get a learned bias for the distance t - j from the attending position
    t back to position j, shared by the blocks. Then every position reads its history as the
    last position of that prefix would: what is trained at position t is what ranking
    uses at the last one, as when a model is trained on every prefix as its own sample
    (BSARec's recipe).

    ``input_dropout`` applies to the input vectors (default: ``hidden_dropout``); the
    decoder sets it apart because its inputs are z, not embeddings.

    ``frequency_mix`` and ``frequency_bins`` give every block BSARec's frequency filter
    (``CausalFrequencyFilter``); a mix of 0 is plain attention."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        max_length: int,
        hidden_dropout: float,
        attention_dropout: float,
        input_dropout: float | None = None,
        *,
        # No defaults here: ModelConfig holds the one default of each.
        position_encoding: str,
        frequency_mix: float,
        frequency_bins: int,
    ):
        super().__init__()
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {POSITION_ENCODINGS}")
        if position_encoding in ("absolute", "recency"):
            self.position_embedding = nn.Embedding(max_length, hidden_size)
            # nn.Embedding's N(0, 1) default would drown the (small) item embeddings in the sum.
            nn.init.normal_(self.position_embedding.weight, std=0.02)
        else:
            # Zero: attention starts uniform over the prefix and learns its own recency.
            self.distance_bias = nn.Parameter(torch.zeros(num_heads, max_length))
        self.position_encoding = position_encoding
        self.input_norm = nn.LayerNorm(hidden_size)
        self.dropout = Dropout(hidden_dropout if input_dropout is None else input_dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(
                hidden_size,
                num_heads,
                hidden_dropout,
                attention_dropout,
                frequency_mix,
                max_length,
                frequency_bins,
            )
            for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, L, D] right-padded; ``lengths`` [B], the real positions of each row
        (recency positions need them; None: every position is real)."""
        positions = torch.arange(x.shape[1], device=x.device)
        bias = None
        if self.position_encoding == "absolute":
            x = x + self.position_embedding(positions)
        elif self.position_encoding == "recency":
            if lengths is None:
                lengths = torch.full(x.shape[:1], x.shape[1])
            # Padding after the last item gets index 0 too; only padding attends to it.
            back = (lengths.to(x.device).unsqueeze(1) - 1 - positions).clamp_min(0)
            x = x + self.position_embedding(back)
        else:
            distance = positions.unsqueeze(1) - positions.unsqueeze(0)  # [L, L]: t - j
            bias = self.distance_bias[:, distance.clamp_min(0)]
            bias = bias.masked_fill(distance < 0, float("-inf"))
        x = self.dropout(self.input_norm(x))
        for block in self.blocks:
            x = block(x, bias)
        return self.output_norm(x)

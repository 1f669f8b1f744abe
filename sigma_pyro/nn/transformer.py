"""A causal (left-to-right) pre-norm transformer, the backbone of encoder and decoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sigma_pyro.nn.dropout import Dropout


class CausalSelfAttentionBlock(nn.Module):
    """One pre-norm transformer block. Attention and hidden dropout are separate settings
    because the published presets use different values for them."""

    def __init__(
        self, hidden_size: int, num_heads: int, hidden_dropout: float, attention_dropout: float
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).chunk(3, dim=-1)
        heads = lambda t: t.view(batch, length, self.num_heads, -1).transpose(1, 2)  # noqa: E731
        # is_causal is the whole leakage guarantee: position t attends to positions <= t.
        attended = F.scaled_dot_product_attention(
            heads(q),
            heads(k),
            heads(v),
            is_causal=True,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        x = x + self.dropout(
            self.attention_out(attended.transpose(1, 2).reshape(batch, length, width))
        )
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class CausalTransformer(nn.Module):
    """Position embeddings, a stack of causal blocks and a final layer norm.

    ``input_dropout`` applies to the input vectors (default: ``hidden_dropout``); the
    decoder sets it apart because its inputs are z, not embeddings."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        max_length: int,
        hidden_dropout: float,
        attention_dropout: float,
        input_dropout: float | None = None,
    ):
        super().__init__()
        self.position_embedding = nn.Embedding(max_length, hidden_size)
        # nn.Embedding's N(0, 1) default would drown the (small) item embeddings in the sum.
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.input_norm = nn.LayerNorm(hidden_size)
        self.dropout = Dropout(hidden_dropout if input_dropout is None else input_dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(hidden_size, num_heads, hidden_dropout, attention_dropout)
            for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        x = self.dropout(self.input_norm(x + self.position_embedding(positions)))
        for block in self.blocks:
            x = block(x)
        return self.output_norm(x)

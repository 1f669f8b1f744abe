"""The output layer and the next-item cross-entropy as one autograd function.

Scored the usual way (``addmm`` then ``cross_entropy``), one training step on Beauty creates
four [positions x items] tensors, up to 200 MB each: the logits, their log-softmax (saved
for backward), the gradient of the log-softmax (a mostly-zero tensor from the NLL backward)
and the gradient of the logits. Each is a fresh allocation, which glibc serves with a new
``mmap`` that the kernel must page in zero-filled, every step. Here the logits are written
into one reusable workspace, the log-normaliser is taken in row chunks, and the backward
turns the same workspace into the gradient in place
(``softmax(logits) * g - onehot(target) * g``), so a step holds one such tensor and
allocates none once the workspace has grown to the largest batch.

The function's outputs are exactly those of ``F.cross_entropy(addmm(b, x, W.T), targets,
reduction="none")``; tests compare values and gradients.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# Rows per chunk of the log-normaliser: its temporaries stay a few MB, small enough for the
# allocator to reuse rather than map afresh.
_CHUNK_ELEMENTS = 1 << 20


class LogitsWorkspace:
    """A buffer reused for the logits of every batch. ``generation`` changes whenever its
    contents are overwritten, so a backward pass can tell whether the logits its forward
    wrote are still there (they are not after another forward, or after an earlier
    backward with ``retain_graph``) and recompute them if not."""

    def __init__(self):
        self._buffer: torch.Tensor | None = None
        self.generation = 0

    def take(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        need = rows * cols
        buffer = self._buffer
        if (buffer is None or buffer.numel() < need or buffer.device != like.device
                or buffer.dtype != like.dtype):
            self._buffer = buffer = torch.empty(need, dtype=like.dtype, device=like.device)
        self.generation += 1
        return buffer[:need].view(rows, cols)

    def release(self) -> None:
        self._buffer = None
        self.generation += 1


def _logsumexp_rows(logits: torch.Tensor) -> torch.Tensor:
    rows = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[1]))
    return torch.cat([torch.logsumexp(chunk, dim=1) for chunk in logits.split(rows)])


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, targets, workspace: LogitsWorkspace):
        logits = workspace.take(features.shape[0], weight.shape[0], features)
        torch.addmm(bias, features, weight.t(), out=logits)
        log_normaliser = _logsumexp_rows(logits)
        target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(features, weight, bias, targets, log_normaliser)
        ctx.workspace, ctx.generation = workspace, workspace.generation
        return log_normaliser - target_logits

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll):
        features, weight, bias, targets, log_normaliser = ctx.saved_tensors
        workspace = ctx.workspace
        intact = workspace.generation == ctx.generation
        logits = workspace.take(features.shape[0], weight.shape[0], features)
        if not intact:
            torch.addmm(bias, features, weight.t(), out=logits)
        grad = grad_nll.unsqueeze(1)
        grad_logits = logits.sub_(log_normaliser.unsqueeze(1)).exp_().mul_(grad)
        grad_logits.scatter_add_(1, targets.unsqueeze(1), -grad)
        grad_features = grad_logits @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits.t() @ features if ctx.needs_input_grad[1] else None
        grad_bias = grad_logits.sum(0) if ctx.needs_input_grad[2] else None
        # take() bumped the generation: the buffer now holds gradients, not logits.
        return grad_features, grad_weight, grad_bias, None, None


def linear_cross_entropy(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         targets: torch.Tensor, workspace: LogitsWorkspace) -> torch.Tensor:
    """Per-row ``-log softmax(features @ weight.T + bias)[target]``, [M] for features
    [M, D], weight [N, D], bias [N] and targets [M] in 0..N-1."""
    return _LinearCrossEntropy.apply(features, weight, bias, targets, workspace)

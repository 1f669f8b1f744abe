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

In float32 the function's outputs are those of ``F.cross_entropy(addmm(b, x, W.T), targets,
reduction="none")``; tests compare values and gradients. Under mixed precision the matmuls
run in bfloat16 and the log-normaliser and the softmax in float32, as autocast would.
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
        if (
            buffer is None
            or buffer.numel() < need
            or buffer.device != like.device
            or buffer.dtype != like.dtype
        ):
            self._buffer = buffer = torch.empty(need, dtype=like.dtype, device=like.device)
        self.generation += 1
        return buffer[:need].view(rows, cols)


def _score_dtype(logits: torch.Tensor) -> torch.dtype:
    """float32 for lower-precision logits; float64 stays float64."""
    return torch.promote_types(logits.dtype, torch.float32)


def _chunk_rows(logits: torch.Tensor) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, logits.shape[1]))


def _logsumexp_rows(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [
            torch.logsumexp(chunk.to(_score_dtype(chunk)), dim=1)
            for chunk in logits.split(_chunk_rows(logits))
        ]
    )


def _softmax_gradient_(logits, log_normaliser, grad_nll, targets) -> torch.Tensor:
    """Overwrite ``logits`` with the gradient of the per-row NLL, ``grad_nll`` per row.
    Lower-precision logits are turned into probabilities in float32, chunk by chunk."""
    if logits.dtype == _score_dtype(logits):
        grad = grad_nll.unsqueeze(1)
        logits.sub_(log_normaliser.unsqueeze(1)).exp_().mul_(grad)
        return logits.scatter_add_(1, targets.unsqueeze(1), -grad)
    rows = _chunk_rows(logits)
    for chunk, normaliser, grad, target in zip(
        logits.split(rows),
        log_normaliser.split(rows),
        grad_nll.split(rows),
        targets.split(rows),
        strict=True,
    ):
        grad = grad.unsqueeze(1)
        probs = chunk.to(_score_dtype(chunk)).sub_(normaliser.unsqueeze(1)).exp_().mul_(grad)
        chunk.copy_(probs.scatter_add_(1, target.unsqueeze(1), -grad))
    return logits


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, targets, workspace: LogitsWorkspace, dtype):
        ctx.input_dtypes = (features.dtype, weight.dtype, bias.dtype)
        # The matmuls run in ``dtype`` (bfloat16 under mixed precision), the normaliser and
        # the NLL in float32; autocast is off so that it cannot re-cast what is set here.
        with torch.autocast(features.device.type, enabled=False):
            features, weight, bias = (t.to(dtype) for t in (features, weight, bias))
            logits = workspace.take(features.shape[0], weight.shape[0], features)
            torch.addmm(bias, features, weight.t(), out=logits)
            log_normaliser = _logsumexp_rows(logits)
            target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
            target_logits = target_logits.to(_score_dtype(logits))
        ctx.save_for_backward(features, weight, bias, targets, log_normaliser)
        ctx.workspace, ctx.generation = workspace, workspace.generation
        return log_normaliser - target_logits

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll):
        features, weight, bias, targets, log_normaliser = ctx.saved_tensors
        workspace = ctx.workspace
        intact = workspace.generation == ctx.generation
        # take() bumps the generation: afterwards the buffer holds gradients, not logits.
        logits = workspace.take(features.shape[0], weight.shape[0], features)
        if not intact:
            torch.addmm(bias, features, weight.t(), out=logits)
        grad_nll = grad_nll.to(log_normaliser.dtype)
        grad_logits = _softmax_gradient_(logits, log_normaliser, grad_nll, targets)
        features_dtype, weight_dtype, bias_dtype = ctx.input_dtypes
        grad_features = (
            (grad_logits @ weight).to(features_dtype) if ctx.needs_input_grad[0] else None
        )
        grad_weight = (
            (grad_logits.t() @ features).to(weight_dtype) if ctx.needs_input_grad[1] else None
        )
        grad_bias = (
            grad_logits.sum(0, dtype=log_normaliser.dtype).to(bias_dtype)
            if ctx.needs_input_grad[2]
            else None
        )
        return grad_features, grad_weight, grad_bias, None, None, None


def linear_cross_entropy(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: torch.Tensor,
    workspace: LogitsWorkspace,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-row ``-log softmax(features @ weight.T + bias)[target]`` (float32 or wider), [M] for
    features [M, D], weight [N, D], bias [N] and targets [M] in 0..N-1. ``dtype`` is the
    precision of the matmuls (default: that of ``features``)."""
    return _LinearCrossEntropy.apply(
        features, weight, bias, targets, workspace, dtype or features.dtype
    )

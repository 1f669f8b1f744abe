"""The fused output layer + cross-entropy equals addmm + F.cross_entropy, in value and
gradient, including when its workspace was overwritten before the backward pass."""

import pytest
import torch
from torch.nn import functional as F

from sigma_pyro.nn.distributions import OutputLayerCategorical
from sigma_pyro.nn.output_layer import LogitsWorkspace, linear_cross_entropy


def _inputs(seed, rows=37, items=301, width=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(items, width, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(items, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, items, (rows,), generator=g)
    return x, w, b, t


def _reference(x, w, b, t, weights):
    nll = F.cross_entropy(torch.addmm(b, x, w.T), t, reduction="none")
    return nll, torch.autograd.grad((nll * weights).sum(), (x, w, b))


@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_match_cross_entropy(seed):
    x, w, b, t = _inputs(seed)
    weights = torch.rand(x.shape[0], dtype=torch.float64)  # per-row upstream gradients
    nll = linear_cross_entropy(x, w, b, t, LogitsWorkspace())
    grads = torch.autograd.grad((nll * weights).sum(), (x, w, b))
    expected, expected_grads = _reference(x, w, b, t, weights)
    torch.testing.assert_close(nll, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_gradcheck():
    x, w, b, t = _inputs(2, rows=5, items=7, width=3)
    workspace = LogitsWorkspace()
    assert torch.autograd.gradcheck(
        lambda x, w, b: linear_cross_entropy(x, w, b, t, workspace), (x, w, b)
    )


def test_overwritten_workspace_is_recomputed():
    workspace = LogitsWorkspace()
    x1, w, b, t1 = _inputs(3)
    x2 = torch.randn(20, x1.shape[1], dtype=torch.float64, requires_grad=True)
    t2 = torch.randint(0, w.shape[0], (20,))
    first = linear_cross_entropy(x1, w, b, t1, workspace)
    second = linear_cross_entropy(x2, w, b, t2, workspace)  # reuses the same buffer
    grads = torch.autograd.grad(first.sum() + second.sum(), (x1, x2, w, b))
    ref1 = F.cross_entropy(torch.addmm(b, x1, w.T), t1, reduction="sum")
    ref2 = F.cross_entropy(torch.addmm(b, x2, w.T), t2, reduction="sum")
    for got, want in zip(grads, torch.autograd.grad(ref1 + ref2, (x1, x2, w, b)), strict=True):
        torch.testing.assert_close(got, want)


def test_retain_graph_second_backward_is_correct():
    x, w, b, t = _inputs(4)
    nll = linear_cross_entropy(x, w, b, t, LogitsWorkspace()).sum()
    nll.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    nll.backward()
    torch.testing.assert_close(x.grad, first)


def test_distribution_scores_like_categorical_and_falls_back_for_other_shapes():
    x, w, b, t = _inputs(5)
    fused = OutputLayerCategorical(x, w, b, LogitsWorkspace(), validate_args=True)
    reference = torch.distributions.Categorical(logits=torch.addmm(b, x, w.T))
    torch.testing.assert_close(fused.log_prob(t), reference.log_prob(t))
    several = t.expand(3, -1)  # a sample shape in front
    torch.testing.assert_close(fused.log_prob(several), reference.log_prob(several))
    torch.testing.assert_close(fused.probs, reference.probs)
    assert fused.expand(fused.batch_shape) is fused
    assert fused.sample((2,)).shape == (2, x.shape[0])
    with pytest.raises(ValueError):
        fused.log_prob(torch.full_like(t, w.shape[0]))  # out of the support


def test_workspace_grows_and_is_reused():
    workspace = LogitsWorkspace()
    like = torch.zeros(1)
    small = workspace.take(2, 3, like)
    big = workspace.take(4, 5, like)
    again = workspace.take(3, 3, like)
    assert small.data_ptr() != big.data_ptr()  # grew
    assert again.data_ptr() == big.data_ptr()  # reused


def test_bfloat16_matmuls_stay_close_to_float32():
    x, w, b, t = (v.detach().float() if v.is_floating_point() else v for v in _inputs(6))
    x, w, b = (v.requires_grad_() for v in (x, w, b))
    nll = linear_cross_entropy(x, w, b, t, LogitsWorkspace(), torch.bfloat16)
    assert nll.dtype == torch.float32
    grads = torch.autograd.grad(nll.sum(), (x, w, b))
    expected, expected_grads = _reference(x, w, b, t, torch.ones(x.shape[0]))
    torch.testing.assert_close(nll, expected, rtol=0.05, atol=0.1)
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)


def test_distribution_built_under_autocast_uses_its_precision():
    x, w, b, t = (v.detach().float() if v.is_floating_point() else v for v in _inputs(7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = OutputLayerCategorical(x, w, b, LogitsWorkspace())
    plain = OutputLayerCategorical(x, w, b, LogitsWorkspace())
    difference = (fused.log_prob(t) - plain.log_prob(t)).abs().max().item()
    assert 0 < difference < 0.2  # bfloat16 matmuls: close, but not the float32 values

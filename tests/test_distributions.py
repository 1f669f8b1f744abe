"""FusedCategorical and OutputLayerCategorical skip ``Categorical.__init__`` and set its private
attributes themselves, so they rely on how Pyro and PyTorch lay out a Categorical: these
tests pin every behaviour the model uses against ``pyro.distributions.Categorical(logits=...)``
so that a release that changes that layout fails here rather than in training."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from sigma_pyro.nn.distributions import FusedCategorical, OutputLayerCategorical
from sigma_pyro.nn.output_layer import LogitsWorkspace

EVENTS = 7


def _fused(batch_shape):
    logits = 3.0 * torch.randn(*batch_shape, EVENTS)
    return FusedCategorical(logits), logits


def _output_layer(batch_shape):
    (rows,) = batch_shape  # the output layer scores [M, D] representations
    features, weight, bias = torch.randn(rows, 5), torch.randn(EVENTS, 5), torch.randn(EVENTS)
    fused = OutputLayerCategorical(features, weight, bias, LogitsWorkspace())
    return fused, torch.addmm(bias, features, weight.T)


CASES = [(_fused, (6,)), (_fused, (4, 3)), (_output_layer, (6,))]
IDS = ["fused-1d", "fused-2d", "output-layer"]


@pytest.fixture(params=CASES, ids=IDS)
def pair(request):
    """(distribution under test, the same distribution as a plain Pyro Categorical)."""
    build, batch_shape = request.param
    torch.manual_seed(0)
    fused, logits = build(batch_shape)
    return fused, dist.Categorical(logits=logits)


def test_shapes_support_and_parameters_match(pair):
    fused, reference = pair
    assert isinstance(fused, dist.Categorical)
    assert fused.batch_shape == reference.batch_shape
    assert fused.event_shape == reference.event_shape == ()
    assert fused.param_shape == reference.param_shape
    assert fused.support.upper_bound == reference.support.upper_bound == EVENTS - 1
    assert fused.has_enumerate_support
    torch.testing.assert_close(fused.logits, reference.logits)
    torch.testing.assert_close(fused.probs, reference.probs)
    torch.testing.assert_close(fused.entropy(), reference.entropy())


def test_log_prob_matches_on_the_batch_shape_and_with_sample_dimensions(pair):
    fused, reference = pair
    value = torch.randint(EVENTS, fused.batch_shape)
    torch.testing.assert_close(fused.log_prob(value), reference.log_prob(value))
    several = torch.randint(EVENTS, (3, *fused.batch_shape))  # takes the fallback path
    torch.testing.assert_close(fused.log_prob(several), reference.log_prob(several))


def test_log_prob_gradients_match():
    torch.manual_seed(1)
    logits = torch.randn(5, EVENTS, requires_grad=True)
    value = torch.randint(EVENTS, (5,))
    (got,) = torch.autograd.grad(FusedCategorical(logits).log_prob(value).sum(), logits)
    (want,) = torch.autograd.grad(dist.Categorical(logits=logits).log_prob(value).sum(), logits)
    torch.testing.assert_close(got, want)


def test_samples_have_the_shape_and_values_of_categorical(pair):
    fused, reference = pair
    assert fused.sample().shape == fused.batch_shape
    assert fused.sample((2, 3)).shape == (2, 3, *fused.batch_shape)
    torch.manual_seed(2)
    got = fused.sample((50,))
    torch.manual_seed(2)
    assert torch.equal(got, reference.sample((50,)))


@pytest.mark.parametrize("expand", [True, False])
def test_enumerate_support_matches(pair, expand):
    fused, reference = pair
    support = fused.enumerate_support(expand=expand)
    assert torch.equal(support, reference.enumerate_support(expand=expand))
    torch.testing.assert_close(fused.log_prob(support), reference.log_prob(support))


def test_expand_keeps_the_fused_form_and_its_values():
    torch.manual_seed(3)
    fused, logits = _fused((4,))
    wide = fused.expand((2, 4))
    assert type(wide) is FusedCategorical and wide.batch_shape == (2, 4)
    value = torch.randint(EVENTS, (2, 4))
    reference = dist.Categorical(logits=logits).expand((2, 4))
    torch.testing.assert_close(wide.log_prob(value), reference.log_prob(value))


def test_a_plate_broadcasts_it_without_losing_the_fused_form():
    torch.manual_seed(4)
    fused, logits = _fused((4,))
    value = torch.randint(EVENTS, (3, 4))

    def program(distribution):
        with pyro.plate("outer", 3, dim=-2), pyro.plate("inner", 4, dim=-1):
            pyro.sample("x", distribution, obs=value)

    site = poutine.trace(program).get_trace(fused).nodes["x"]
    assert isinstance(site["fn"], FusedCategorical) and site["fn"].batch_shape == (3, 4)
    expected = poutine.trace(program).get_trace(dist.Categorical(logits=logits)).nodes["x"]
    torch.testing.assert_close(site["fn"].log_prob(value), expected["fn"].log_prob(value))


def test_out_of_support_values_are_rejected_when_validating():
    fused = FusedCategorical(torch.randn(4, EVENTS), validate_args=True)
    with pytest.raises(ValueError):
        fused.log_prob(torch.full((4,), EVENTS))

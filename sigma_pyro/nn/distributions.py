"""Categorical distributions over unnormalised logits with fused log-densities.

``pyro.distributions.Categorical(logits=x)`` normalises ``x`` on construction, which for the
next-item site materialises a second [positions x items] tensor (the largest in the model)
and back-propagates through a separate log-sum-exp. This subclass keeps the raw logits and
evaluates ``log_prob`` with PyTorch's fused cross-entropy kernel: same values, same
gradients, measured about 25% less time per SVI step on Beauty. Everything else (sampling,
``probs``, ``logits``, enumeration support) is inherited and computed lazily on demand.
``OutputLayerCategorical`` goes one step further for the next-item site: it takes the output
layer's inputs instead of the logits (see ``sigma_pyro.nn.output_layer``).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions.utils import lazy_property
from torch.nn import functional as F

from sigma_pyro.nn.output_layer import LogitsWorkspace, linear_cross_entropy


class FusedCategorical(dist.Categorical):
    def __init__(self, logits: torch.Tensor, validate_args=None):
        self._raw_logits = logits
        self._num_events = logits.shape[-1]
        self._param = logits
        # Skip Categorical.__init__, which would normalise the logits eagerly.
        dist.TorchDistribution.__init__(self, logits.shape[:-1], validate_args=validate_args)

    @lazy_property
    def logits(self) -> torch.Tensor:
        return self._raw_logits - self._raw_logits.logsumexp(dim=-1, keepdim=True)

    @lazy_property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self._raw_logits, dim=-1)

    @property
    def param_shape(self) -> torch.Size:
        return self._raw_logits.shape

    def expand(self, batch_shape, _instance=None):
        # Plates broadcast every site through expand(): keep the fused form.
        batch_shape = torch.Size(batch_shape)
        return FusedCategorical(
            self._raw_logits.expand(batch_shape + (self._num_events,)),
            validate_args=self._validate_args if _instance is None else None,
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if value.shape != self.batch_shape:
            return super().log_prob(value)
        # float(): logits computed under bfloat16 autocast are scored in float32.
        flat = F.cross_entropy(
            self._raw_logits.float().reshape(-1, self._num_events),
            value.reshape(-1).long(),
            reduction="none",
        )
        return -flat.reshape(value.shape)


class OutputLayerCategorical(FusedCategorical):
    """``Categorical(logits=features @ weight.T + bias)`` that scores observations with
    :func:`~sigma_pyro.nn.output_layer.linear_cross_entropy`, never keeping the logits.

    The logits are only materialised if something other than ``log_prob`` of a value of
    the batch shape asks for them (sampling, ``probs``, enumeration). Pyro scores a trace
    after the model returns, outside any autocast region the model ran in, so the matmul
    precision is taken from autocast when the distribution is built."""

    def __init__(
        self,
        features: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        workspace: LogitsWorkspace,
        validate_args=None,
    ):
        self._features, self._weight, self._bias = features, weight, bias
        self._workspace = workspace
        device_type = features.device.type
        self._matmul_dtype = (
            torch.get_autocast_dtype(device_type)
            if torch.is_autocast_enabled(device_type)
            else features.dtype
        )
        self._num_events = weight.shape[0]
        dist.TorchDistribution.__init__(self, features.shape[:-1], validate_args=validate_args)

    @lazy_property
    def _raw_logits(self) -> torch.Tensor:
        return torch.addmm(self._bias, self._features, self._weight.T)

    @property
    def _param(self) -> torch.Tensor:
        return self._raw_logits

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        return super().expand(batch_shape, _instance)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value.shape != self.batch_shape or self._features.dim() != 2:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return -linear_cross_entropy(
            self._features,
            self._weight,
            self._bias,
            value.long(),
            self._workspace,
            self._matmul_dtype,
        )

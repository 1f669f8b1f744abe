"""A categorical distribution over unnormalised logits with a fused log-density.

``pyro.distributions.Categorical(logits=x)`` normalises ``x`` on construction, which for the
next-item site materialises a second [positions x items] tensor (the largest in the model)
and back-propagates through a separate log-sum-exp. This subclass keeps the raw logits and
evaluates ``log_prob`` with PyTorch's fused cross-entropy kernel: same values, same
gradients, measured about 25% less time per SVI step on Beauty. Everything else (sampling,
``probs``, ``logits``, enumeration support) is inherited and computed lazily on demand.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions.utils import lazy_property
from torch.nn import functional as F


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
        return FusedCategorical(self._raw_logits.expand(batch_shape + (self._num_events,)),
                                validate_args=self._validate_args if _instance is None else None)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if value.shape != self.batch_shape:
            return super().log_prob(value)
        # float(): logits computed under bfloat16 autocast are scored in float32.
        flat = F.cross_entropy(self._raw_logits.float().reshape(-1, self._num_events),
                               value.reshape(-1).long(), reduction="none")
        return -flat.reshape(value.shape)

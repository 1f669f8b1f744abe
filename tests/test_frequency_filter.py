"""The causal frequency filter: BSARec's FFT low-pass read at each prefix's last position."""

from __future__ import annotations

import pytest
import torch

from helpers import make_module
from sigma_pyro.nn.transformer import CausalFrequencyFilter, low_pass_kernel


def fft_low_pass(window: torch.Tensor, bins: int) -> torch.Tensor:
    """BSARec's low band: zero all but the ``bins`` lowest frequencies of the window."""
    spectrum = torch.fft.rfft(window, dim=-2, norm="ortho")
    spectrum[..., bins:, :] = 0
    return torch.fft.irfft(spectrum, n=window.shape[-2], dim=-2, norm="ortho")


@pytest.mark.parametrize("window,bins", [(50, 3), (8, 5), (7, 4), (10, 1)])
def test_kernel_is_the_last_row_of_the_fft_low_pass(window, bins):
    x = torch.randn(window, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = low_pass_kernel(window, bins).double()
    by_kernel = (kernel.unsqueeze(1) * x.flip(0)).sum(0)  # d steps back from the last
    torch.testing.assert_close(by_kernel, fft_low_pass(x, bins)[-1], rtol=0, atol=1e-6)


def test_each_position_is_filtered_as_its_left_padded_prefix_would_be():
    """Position t of a right-padded sequence gets what BSARec's filter gives at the last
    index of the prefix x_0..x_t, left-padded with zeros to the whole window."""
    window, bins, width = 12, 3, 4
    layer = CausalFrequencyFilter(width, window, bins).double()
    with torch.no_grad():
        layer.sqrt_beta.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, window, width, dtype=torch.float64)
    ours = layer(x)
    for t in range(window):
        prefix = torch.zeros(2, window, width, dtype=torch.float64)
        prefix[:, window - t - 1 :] = x[:, : t + 1]
        low = fft_low_pass(prefix, bins)[:, -1]
        theirs = low + layer.sqrt_beta.square() * (x[:, t] - low)
        torch.testing.assert_close(ours[:, t], theirs, rtol=0, atol=1e-6)


def test_unit_beta_passes_the_input_through():
    layer = CausalFrequencyFilter(4, 10, 3)
    x = torch.randn(3, 10, 4)
    torch.testing.assert_close(layer(x), x)


def test_shorter_batches_use_the_kernel_from_their_first_position():
    layer = CausalFrequencyFilter(4, 10, 3)
    with torch.no_grad():
        layer.sqrt_beta.fill_(0.5)
    x = torch.randn(2, 10, 4)
    torch.testing.assert_close(layer(x[:, :6]), layer(x)[:, :6])


def test_no_filter_without_a_mix_keeps_the_saved_weights_as_they_were():
    plain = make_module("normal")
    assert not any("frequency" in name for name in plain.state_dict())
    mixed = make_module("normal", frequency_mix=0.5)
    names = [name for name in mixed.state_dict() if "frequency" in name]
    # One learned rescaling per block; the mixing matrix is rebuilt, never saved.
    assert names and all(name.endswith("sqrt_beta") for name in names)

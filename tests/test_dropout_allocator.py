"""The CPU dropout keeps inverted-dropout semantics; the allocator setting is safe to call."""

import subprocess
import sys

import pytest
import torch

from sigma_pyro.nn.dropout import Dropout


def test_dropout_zeroes_about_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = Dropout(0.3).train()(x)
    assert abs((out == 0).float().mean().item() - 0.3) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.01
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.7))


def test_dropout_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 5, 32, requires_grad=True)
    out = Dropout(0.5).train()(x)
    out.sum().backward()
    assert torch.equal(x.grad == 0, out == 0)
    assert torch.allclose(x.grad[x.grad != 0], torch.tensor(2.0))


def test_dropout_is_the_identity_in_eval_and_at_zero():
    x = torch.randn(10, 4)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def _printed_by(code: str) -> str:
    """What a fresh Python process running ``code`` prints (allocator settings are per
    process, so each check starts from glibc's and oneDNN's defaults)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_large_allocations_still_work_with_freed_memory_retained():
    # In a fresh process: the setting cannot be undone, and this test must leave the
    # allocator of the suite's own process alone.
    assert (
        _printed_by(
            "import torch; from sigma_pyro.runtime.allocator import retain_freed_memory; "
            "retain_freed_memory(); "
            "print(all(torch.ones(30_000_000).sum().item() == 30_000_000 for _ in range(3)))"
        )
        == "True"
    )


def test_system_allocator_opt_out():
    assert (
        _printed_by(
            "import os; os.environ['SIGMA_PYRO_MALLOC'] = 'system'; "
            "from sigma_pyro.runtime.allocator import retain_freed_memory; "
            "print(retain_freed_memory())"
        )
        == "False"
    )


@pytest.mark.parametrize("preset, expected", [("7", "7"), (None, "64")])
def test_onednn_cache_cap_keeps_a_user_setting(preset, expected):
    setup = (
        f"os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'] = '{preset}'"
        if preset
        else "os.environ.pop('ONEDNN_PRIMITIVE_CACHE_CAPACITY', None)"
    )
    assert (
        _printed_by(
            f"import os; {setup}; "
            "from sigma_pyro.runtime.allocator import configure_process_memory; "
            "configure_process_memory(); "
            "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
        )
        == expected
    )

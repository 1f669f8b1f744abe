"""Posterior diagnostics with ArviZ: how good the amortised guide is as a posterior (PSIS
k-hat), whether the mixture prior is used or collapsed, whether z carries information
(posterior collapse), how calibrated the posterior predictive is on held-out items, and
whether independently trained seeds agree (R-hat, ESS).

    from sigma_pyro.diagnostics import diagnose
    result = diagnose("runs/demo", "runs/demo-diagnostics", num_users=500)
    result.summary["psis"]["share_above_0.7"]
"""

from sigma_pyro.diagnostics.outputs import OUTPUTS

__all__ = ["OUTPUTS", "DiagnosticsResult", "diagnose"]


def __getattr__(name):
    # Lazy, so that ``sigma-pyro --help`` does not pay for importing torch and ArviZ.
    if name in ("DiagnosticsResult", "diagnose"):
        from sigma_pyro.diagnostics import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

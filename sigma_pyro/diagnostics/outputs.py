"""The files ``diagnose`` writes, described once for ``--help`` and for the report. Free of
heavy imports, so that building the CLI parser stays fast."""

OUTPUTS = {
    "diagnostics.nc": "InferenceData (az.from_netcdf): posterior, posterior_predictive, "
    "log_likelihood, observed_data, sample_stats, user_diagnostics",
    "runs.nc": "run-level quantities per draw, one chain per model, for az.summary",
    "khat.png": "PSIS Pareto k-hat of the guide per user",
    "forest_interests.png": "mixture components across users: weight, responsibility, scale "
    "(mixture priors only)",
    "mixture_weights.png": "posterior responsibilities and prior weights of a few users "
    "(mixture priors only)",
    "predictive_rank.png": "held-out rank histogram, randomised PIT, expected vs observed "
    "hit rate at K",
    "report.md": "what is healthy and what is not, with the numbers",
}

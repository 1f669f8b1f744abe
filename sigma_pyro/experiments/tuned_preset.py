"""The best trial of a ``sigma-pyro tune`` study as a preset file, ``OUT/best.yaml``: the
study's preset as its ``base`` and the tuned settings on top, each commented with the trial
that chose it, so that a tuned preset is written by its study rather than copied by hand."""

from __future__ import annotations

import os
import shlex
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from optuna.trial import FrozenTrial

from sigma_pyro.config import PRESET_NAMES, nest_overrides
from sigma_pyro.experiments.reporting import override_flags

if TYPE_CHECKING:
    from sigma_pyro.experiments.study import TuningPlan

BEST_PRESET = "best.yaml"


def best_preset_text(plan: TuningPlan, trial: FrozenTrial) -> str:
    """The preset of ``trial``: train it with the flags the study fixed, which it names."""
    result = trial.user_attrs.get("result", {})
    score = result.get("valid", {}).get(plan.criterion)
    chosen = f"trial {trial.number} of the study {plan.study_name}"
    notes = [
        f"The best trial, {chosen}: validation {plan.criterion} {score:.4f} at epoch "
        f"{result.get('best_epoch')}, one seed ({plan.seed}); written by `sigma-pyro tune` "
        f"at {trial.user_attrs.get('code', 'an unrecorded commit')}."
    ]
    fixed = override_flags(plan.overrides)
    if fixed:
        # The study's protocol (data, prior, epochs, ...) is not a preset setting: a preset
        # that fixed the prior could not serve the other variants.
        notes.append(f"The study fixed, and its trials were trained with: {shlex.join(fixed)}")
    if trial.user_attrs.get("baseline"):
        notes.append("The best trial is the preset itself: this file changes nothing.")
    lines = [
        f"# {line}"
        for note in notes
        for line in textwrap.wrap(note, 90, break_on_hyphens=False, break_long_words=False)
    ]
    base = _base(plan)
    if base is not None:
        lines.append(f"base: {base}")
    for section, values in nest_overrides(trial.params).items():
        lines.append(f"{section}:")
        for name, value in values.items():
            setting = yaml.safe_dump({name: value}).strip()
            lines.append(f"  {setting}  # {chosen}")
    return "\n".join(lines) + "\n"


def _base(plan: TuningPlan) -> str | None:
    """The study's preset as a ``base:`` that resolves from ``plan.out``."""
    if plan.preset is None or plan.preset in PRESET_NAMES:
        return plan.preset
    return os.path.relpath(Path(plan.preset).resolve(), plan.out.resolve())

"""A saved model folder: the weights in ``model.pt`` and, in ``model.json``, what they need
to be used again (format version, configuration, item vocabulary, library versions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sigma_pyro.config import Config, check_device, nest_overrides
from sigma_pyro.data.dataset import ItemVocabulary
from sigma_pyro.errors import CheckpointError, ConfigError
from sigma_pyro.nn.module import SigmaModule
from sigma_pyro.runtime.checkpoint import (
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    atomic_torch_save,
    atomic_write_json,
    library_versions,
    read_json,
    safe_torch_load,
)

# Settings added after models were first saved, with the value that trains and scores such a
# model as it was: a model.json without the key predates the setting, and today's default
# would change (or refuse) it. Learned assignment temperatures predate the annealing, and
# absolute position embeddings the other encodings.
BEFORE_THE_SETTING_EXISTED = {
    ("model", "assignment_anneal_epochs"): 0,
    ("model", "position_encoding"): "absolute",
}


@dataclass
class SavedModel:
    config: Config
    module: SigmaModule  # on the configured device, in eval mode
    items: ItemVocabulary
    meta: dict  # the contents of model.json


def save_model(
    out_dir: str | Path,
    module: SigmaModule,
    config: Config,
    items: ItemVocabulary,
    extra: dict | None = None,
) -> Path:
    """Write ``module`` into ``out_dir``; ``extra`` joins the metadata."""
    out = Path(out_dir)
    atomic_torch_save(module.state_dict(), out / MODEL_FILE)
    atomic_write_json(
        {
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "items": items.raw_ids,
            "versions": library_versions(),
            **(extra or {}),
        },
        out / META_FILE,
    )
    return out


def load_model(model_dir: str | Path, data_overrides: dict) -> SavedModel:
    """The model saved in ``model_dir``, its configuration changed by the flat
    ``data_overrides``."""
    model_dir = Path(model_dir)
    meta = read_json(model_dir / META_FILE)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{model_dir / META_FILE}: format version "
            f"{meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    try:
        saved = meta["config"]
        for (section, name), value in BEFORE_THE_SETTING_EXISTED.items():
            if isinstance(saved.get(section), dict):
                saved[section].setdefault(name, value)
        config = Config.from_dict(saved, str(model_dir / META_FILE))
        items = ItemVocabulary([str(i) for i in meta["items"]])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{model_dir / META_FILE}: missing or malformed {err}") from None
    try:
        check_device(config.train.device)
    except ConfigError:
        # A model trained on a GPU still loads, onto the CPU, where there is none.
        config.train.device = "cpu"
    if data_overrides:
        config.update(nest_overrides(data_overrides), "overrides")
    config.validate()
    module = SigmaModule(len(items), config.model)
    state = safe_torch_load(model_dir / MODEL_FILE)
    if isinstance(state, dict) and config.model.likelihood == "full":
        # Models saved before the sampled likelihood existed lack its sampler, which a
        # full-softmax model never uses.
        state.setdefault("sampling_log_q", module.sampling_log_q)
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{model_dir / MODEL_FILE}: weights do not match the "
            f"saved configuration ({str(err).splitlines()[0]})"
        ) from None
    module.to(config.train.device).eval()
    return SavedModel(config, module, items, meta)


def check_same_items(model_dir: str | Path, items: ItemVocabulary, source) -> None:
    """Resuming into ``model_dir`` needs the items its saved model was trained on."""
    meta_path = Path(model_dir) / META_FILE
    if meta_path.is_file() and read_json(meta_path).get("items") != items.raw_ids:
        raise CheckpointError(
            f"{meta_path}: the saved model was trained on other items than "
            f"{source}; resume needs the same data"
        )

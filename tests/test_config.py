"""Configuration: presets, overrides and one-line errors that name the flag or file."""

from __future__ import annotations

import math

import pytest

from sigma_pyro.cli.main import main
from sigma_pyro.config import (
    PRESET_NAMES,
    Config,
    ConfigError,
    load_config,
    nest_overrides,
    preset_path,
)
from sigma_pyro.config.files import read_preset
from sigma_pyro.errors import SigmaPyroError


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, SigmaPyroError)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_loads_and_validates(name):
    config = load_config(name)
    assert isinstance(config, Config)
    assert preset_path(name).is_file()
    assert config.model.prior == "sigma"
    assert config.train.early_stop_metric == "ndcg@10"


def test_beauty_preset_values():
    c = load_config("beauty")
    assert c.data.format == "seq"
    assert c.model.max_seq_length == 50
    assert c.model.attention_dropout == 0.0
    assert c.model.hidden_dropout == 0.3
    assert c.model.hidden_size == 128 and c.model.num_heads == 4 and c.model.num_interests == 4
    assert c.train.kl_anneal_steps == 10000
    assert c.train.kl_cap == 0.0016 and c.train.lr == 0.001 and c.train.batch_size == 256


def test_office_preset_values():
    c = load_config("office")
    assert c.data.format == "seq"
    assert c.model.max_seq_length == 100
    assert c.model.attention_dropout == 0.3
    assert c.model.hidden_dropout == 0.3
    assert c.train.kl_anneal_steps == 20000
    assert c.train.epochs == 400 and c.train.patience == 10


def test_toys_preset_values():
    c = load_config("toys")
    assert c.model.max_seq_length == 100
    assert c.model.attention_dropout == 0.3
    assert c.train.kl_anneal_steps == 10000


def test_synthetic_preset_is_the_embedded_dataset():
    c = load_config("synthetic")
    assert c.data.path is None
    assert c.data.synthetic_categories >= 1 and c.model.num_interests >= 1


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_applies_every_value_in_its_file(name):
    values = read_preset(preset_path(name))  # with those of its base
    config = load_config(name).to_dict()
    applied = 0
    for section, fields in values.items():
        for key, value in (fields or {}).items():
            assert config[section][key] == value, f"{name}: {section}.{key}"
            applied += 1
    assert applied >= 10


def test_no_preset_gives_dataclass_defaults():
    assert load_config().to_dict() == Config().to_dict()


def test_overrides_take_precedence_over_the_preset():
    c = load_config(
        "office",
        {
            "model": {"max_seq_length": 20, "attention_dropout": 0.1},
            "train": {"kl_anneal_steps": 5},
        },
    )
    assert c.model.max_seq_length == 20
    assert c.model.attention_dropout == 0.1
    assert c.train.kl_anneal_steps == 5
    # Untouched preset values survive.
    assert c.model.hidden_dropout == 0.3 and c.data.format == "seq"


def test_overrides_are_coerced_from_strings():
    c = load_config(
        "beauty",
        {
            "model": {"hidden_size": "64", "train_prototypes": "false"},
            "train": {"lr": "0.01"},
            "eval": {"ks": "5,10"},
            "data": {"min_rating": "none"},
        },
    )
    assert c.model.hidden_size == 64 and c.model.train_prototypes is False
    assert c.train.lr == 0.01 and c.eval.ks == [5, 10] and c.data.min_rating is None


def test_nest_overrides_routes_flat_names_to_sections():
    nested = nest_overrides({"hidden_size": 8, "epochs": 3, "path": "x.txt", "ks": [1]})
    assert nested == {
        "model": {"hidden_size": 8},
        "train": {"epochs": 3},
        "data": {"path": "x.txt"},
        "eval": {"ks": [1]},
    }


def test_round_trip_through_dict():
    c = load_config("office", {"model": {"prior": "normal"}})
    assert Config.from_dict(c.to_dict()).to_dict() == c.to_dict()


# -- errors ----------------------------------------------------------------------------------


def raises_naming(overrides: dict, *needles: str, preset: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(preset, overrides)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


@pytest.mark.parametrize(
    "overrides,flag",
    [
        ({"model": {"hidden_size": -8}}, "--hidden-size"),
        ({"model": {"hidden_size": 0}}, "--hidden-size"),
        ({"model": {"num_interests": 0}}, "--num-interests"),
        ({"model": {"num_heads": 0}}, "--num-heads"),
        ({"model": {"max_seq_length": 1}}, "--max-seq-length"),
        ({"model": {"hidden_size": 10, "num_heads": 4}}, "--hidden-size"),
        ({"model": {"hidden_size": 10, "num_heads": 4}}, "--num-heads"),
        ({"model": {"prior": "nope"}}, "--prior"),
        ({"model": {"hidden_dropout": 1.0}}, "--hidden-dropout"),
        ({"model": {"attention_dropout": -0.1}}, "--attention-dropout"),
        ({"model": {"orthogonality_weight": -1.0}}, "--orthogonality-weight"),
        ({"train": {"epochs": 0}}, "--epochs"),
        ({"train": {"batch_size": -1}}, "--batch-size"),
        ({"train": {"lr": 0.0}}, "--lr"),
        ({"train": {"num_particles": 0}}, "--num-particles"),
        ({"train": {"kl_cap": 0.0}}, "--kl-cap"),
        ({"train": {"kl_anneal_steps": -1}}, "--kl-anneal-steps"),
        ({"train": {"early_stop_metric": "precision@10"}}, "--early-stop-metric"),
        ({"eval": {"ks": []}}, "--ks"),
        ({"eval": {"ks": [0, 5]}}, "--ks"),
        ({"data": {"format": "xml"}}, "--format"),
        ({"data": {"synthetic_items": 0}}, "--synthetic-items"),
        ({"model": {"learn_assignment_temperature": True}}, "--assignment-anneal-epochs 0"),
        ({"model": {"assignment_anneal_epochs": -1}}, "--assignment-anneal-epochs"),
        ({"model": {"assignment_temperature_start": 0.0}}, "--assignment-temperature-start"),
        ({"model": {"position_encoding": "rotary"}}, "--position-encoding"),
        ({"train": {"training_samples": "windows"}}, "--training-samples"),
        ({"model": {"frequency_mix": 1.5}}, "--frequency-mix"),
        ({"model": {"frequency_bins": 0}}, "--frequency-bins"),
        ({"model": {"max_seq_length": 10, "frequency_bins": 7}}, "--frequency-bins"),
    ],
)
def test_impossible_values_name_the_flag(overrides, flag):
    raises_naming(overrides, flag)


def test_unknown_prior_lists_the_known_ones():
    message = raises_naming({"model": {"prior": "nope"}}, "'nope'")
    assert "sigma" in message and "normal" in message


def test_unknown_preset_names_the_flag():
    raises_naming({}, "--preset", "'nope'", preset="nope")


def test_missing_preset_file(tmp_path):
    raises_naming({}, "--preset", "no such file", preset=str(tmp_path / "absent.yaml"))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"model": {"hidden_sizes": 3}}, "model.hidden_sizes"),
        ({"modelx": {"hidden_size": 3}}, "modelx"),
        ({"train": {"hidden_size": 3}}, "train.hidden_size"),  # right key, wrong section
    ],
)
def test_unknown_keys_are_rejected(overrides, needle):
    raises_naming(overrides, needle)


def test_unknown_flat_setting_names_the_flag():
    with pytest.raises(ConfigError, match="--num-interest"):
        nest_overrides({"num_interest": 3})


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"model": {"hidden_size": "abc"}}, "hidden_size"),
        ({"model": {"hidden_size": 16.5}}, "hidden_size"),
        ({"model": {"hidden_size": [16]}}, "hidden_size"),
        ({"train": {"lr": "fast"}}, "lr"),
        ({"model": {"train_prototypes": "maybe"}}, "train_prototypes"),
        ({"eval": {"ks": "5,x"}}, "ks"),
        ({"eval": {"ks": 5}}, "ks"),
        ({"model": {"prior": None}}, "prior"),
        ({"model": "big"}, "model"),
    ],
)
def test_bad_types_are_rejected(overrides, needle):
    raises_naming(overrides, needle)


@pytest.mark.parametrize(
    "overrides",
    [{"model": {"num_heads": True}}, {"train": {"epochs": True}}, {"train": {"lr": False}}],
)
def test_bools_are_not_integers(overrides):
    with pytest.raises(ConfigError):
        load_config(None, overrides)


@pytest.mark.parametrize(
    "overrides,flag",
    [
        ({"train": {"lr": math.nan}}, "--lr"),
        ({"train": {"lr": "nan"}}, "--lr"),
        ({"train": {"kl_cap": math.nan}}, "--kl-cap"),
    ],
)
def test_nan_is_not_positive(overrides, flag):
    raises_naming(overrides, flag)


def test_cli_bad_type_names_the_flag(capsys):
    assert main(["train", "--hidden-size", "abc", "--no-progress"]) == 2
    assert "--hidden-size" in capsys.readouterr().err


# -- YAML files ----------------------------------------------------------------------------


def test_yaml_file_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  hidden_size: 32\n  num_heads: 8\ntrain:\n  epochs: 3\n")
    c = load_config(str(path), {"train": {"epochs": 5}})
    assert c.model.hidden_size == 32 and c.model.num_heads == 8
    assert c.train.epochs == 5


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yml"
    path.write_text("")
    assert load_config(str(path)).to_dict() == Config().to_dict()


@pytest.mark.parametrize(
    "text",
    [
        "model:\n  hidden_size: [1, 2\n  num_heads: 2\n",  # unclosed flow sequence
        "model:\n\thidden_size: 3\n",  # tab indentation
        "model: {hidden_size: 3\n",
    ],
)
def test_malformed_yaml_names_the_file(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    message = raises_naming({}, str(path), "not valid YAML", preset=str(path))
    assert "Traceback" not in message


def test_undecodable_yaml_names_the_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"model:\n  prior: \xff\xfe\n")
    raises_naming({}, str(path), preset=str(path))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("- a\n- b\n", "mapping"),
        ("model: 5\n", "'model'"),
        ("model:\n  hidden_sizes: 3\n", "model.hidden_sizes"),
        ("model:\n  hidden_size: abc\n", "model.hidden_size"),
        ("model:\n  num_interests: 0\n", "--num-interests"),
    ],
)
def test_wellformed_but_wrong_yaml(tmp_path, text, needle):
    path = tmp_path / "wrong.yaml"
    path.write_text(text)
    message = raises_naming({}, needle, preset=str(path))
    if needle != "--num-interests":
        assert str(path) in message


@pytest.mark.parametrize("name", ["beauty", "toys", "office"])
def test_each_dataset_preset_is_its_published_settings_plus_what_validation_changed(name):
    tuned, published = load_config(name).to_dict(), load_config(f"{name}-published").to_dict()
    changed = {
        key
        for section in tuned
        for key in tuned[section]
        if tuned[section][key] != published[section][key]
    }
    # Beauty and Toys: their studies have not finished. Office: the annealed interests.
    expected = (
        {"learn_interest_temperature", "assignment_temperature"} if name == "office" else set()
    )
    assert changed == expected


def test_a_preset_layers_on_its_base_and_flags_on_both(tmp_path):
    write = lambda name, text: (tmp_path / name).write_text(text, encoding="utf-8")  # noqa: E731
    write("mine.yaml", "base: office\nmodel:\n  hidden_size: 64\ntrain:\n")
    config = load_config(str(tmp_path / "mine.yaml"), {"train": {"lr": 0.01}})
    assert config.model.hidden_size == 64 and config.train.lr == 0.01
    assert config.model.assignment_temperature == 0.05  # from office
    assert config.train.kl_anneal_steps == 20000  # from office-published, two levels down
    write("loop.yaml", "base: again.yaml\n")
    write("again.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: base again\.yaml leads back to itself"):
        load_config(str(tmp_path / "again.yaml"))
    write("orphan.yaml", "base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"orphan\.yaml: base gone\.yaml: no such file"):
        load_config(str(tmp_path / "orphan.yaml"))
    write("odd.yaml", "base: 3\n")
    with pytest.raises(ConfigError, match=r"odd\.yaml: base 3 is neither a preset nor a \.yaml"):
        load_config(str(tmp_path / "odd.yaml"))

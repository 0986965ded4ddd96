"""One description of a training run: every config field has a CLI flag, the spec survives the
round trip through the CLI's words (what the server's background job runs), and values are
coerced and refused the same way whatever sends them."""
from __future__ import annotations

from dataclasses import fields

import pytest

from vae_explorer import MODELS, RunError, RunSpec, TrainConfig
from vae_explorer.cli import build_parser
from vae_explorer.runs import DataSpec, coerce, model_settings, parse_settings, spec_from_args


def _example(f, config):
    """A value for field f that differs from `config`'s, as the CLI would write it."""
    value = getattr(config, f.name)
    choices = f.metadata.get("choices")
    if choices:
        return str(next(c for c in choices if c != value)), next(c for c in choices if c != value)
    if isinstance(value, bool):
        return None, not value
    if isinstance(value, tuple):
        return "7,5", (7, 5)
    if isinstance(value, int) or value is None and "int" in str(f.type):
        return "3", 3
    if isinstance(value, float) or value is None and "float" in str(f.type):
        return "0.5", 0.5
    return "cpu", "cpu"


def _parse(argv):
    return spec_from_args(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_field_of_every_registry_config_is_reachable_from_the_cli(name):
    preset = MODELS[name].preset
    for f in fields(preset):
        if f.metadata.get("data"):
            continue  # input_shape comes from the dataset
        text, value = _example(f, preset)
        flag = "--" + f.name.replace("_", "-")
        argv = [flag, text] if text is not None else [flag if value else "--no-" + flag[2:]]
        spec = _parse(["--model", name, *argv])
        assert spec.settings == {f.name: value if text is None else text}, f.name
        assert coerce(f, spec.settings[f.name]) == value


def test_every_field_of_the_training_and_data_configs_is_reachable_from_the_cli():
    for part, cls in (("train", TrainConfig), ("data", DataSpec)):
        for f in fields(cls):
            if not f.metadata.get("cli", True):
                continue
            text, value = _example(f, cls())
            flag = "--" + f.name.replace("_", "-")
            argv = [flag, text] if text is not None else [flag if value else "--no-" + flag[2:]]
            got = getattr(getattr(_parse(argv), part), f.name)
            assert (coerce(f, got) if text is not None else got) == value, f.name
    assert not [f.name for f in fields(TrainConfig) if not f.metadata.get("help")]  # every flag has help


def test_a_spec_survives_the_round_trip_through_the_cli_words():
    spec = RunSpec("vq_vae", {"latent_dim": 8, "hidden": (64, 32), "codebook_update": "ema", "ema_decay": 0.9,
                              "squash": False}, DataSpec("digits", image_size=12, image_channels=1),
                   TrainConfig(epochs=3, lr=2e-3, compile=True, threads=1), out="runs/x").validate()
    again = _parse(spec.to_argv()).validate()
    assert again == spec


def test_values_are_coerced_the_same_from_text_and_from_the_page():
    f = {f.name: f for f in fields(TrainConfig)}
    assert coerce(f["epochs"], "3") == coerce(f["epochs"], 3.0) == 3
    for bad in ("2.5", 2.5, "nan", float("inf"), "1e400", [1], "x", True):
        with pytest.raises(RunError, match="epochs must be a whole number"):
            coerce(f["epochs"], bad)
    with pytest.raises(RunError, match="lr must be a number"):
        coerce(f["lr"], "fast")
    with pytest.raises(RunError, match="unknown precision 'fp8'"):
        coerce(f["precision"], "fp8")
    assert coerce(model_settings()["hidden"], "512, 256") == coerce(model_settings()["hidden"], [512, 256]) == (512, 256)
    assert parse_settings("commitment=0.5; restart-every = 0\n# a comment\n") == {"commitment": "0.5",
                                                                                  "restart_every": "0"}


def test_a_spec_with_a_setting_of_another_model_is_refused():
    with pytest.raises(RunError, match="codebook_size does not apply to model vae"):
        RunSpec("vae", {"codebook_size": 16}).validate()
    with pytest.raises(RunError, match="unknown model setting 'depth'"):
        RunSpec("vae", {"depth": 3}).validate()

"""Hostile and broken checkpoint files, and checkpoint names that try to leave the folder.

Broken files (truncated, random bytes, empty, wrong architecture, non-finite weights,
bad JSON headers, a header claiming a model far larger than its tensors) get an error
naming the file from `load_checkpoint`, `Catalog.get` and the server, which keeps
serving. Pickle payloads saved under checkpoint names never run, whatever path loads
them (a marker file they would create must never appear). Names from the UI/API are
bare stems: folders, "..", absolute paths, symlinks, encoded slashes and NUL bytes
are refused.
"""
from __future__ import annotations

import json
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vae_explorer import TrainConfig, build_model, fit, load_checkpoint, load_dataset, read_metadata, save_checkpoint
from vae_explorer.server.catalog import DEFAULT_LOADED_MODELS, Catalog, CatalogError
from vae_explorer.checkpoints import META_KEY, CheckpointError, load_train_state
from vae_explorer.runs import RunSpec
from vae_explorer.server.jobs import JobError, validate_run
from vae_explorer.server import Explorer, ViewError

from .conftest import REPO, copy_checkpoints, serve

DIGITS = {"name": "digits", "root": None, "image_size": None, "channels": None}

# file stem -> words its error must contain
BROKEN = {
    "truncated": "not a readable safetensors checkpoint",
    "truncated_header": "not a readable safetensors checkpoint",
    "corrupt": "not a readable safetensors checkpoint",
    "empty": "the file is empty",
    "wrong_arch": "weights do not fit a vae",
    "nan_weights": "non-finite weights",
    "inf_weights": "non-finite weights",
    "no_metadata": "without vae_explorer metadata",
    "header_not_json": "corrupt metadata",
    "header_not_object": "metadata is not a JSON object",
    "header_model_list": "unknown model",
    "unknown_model": "unknown model 'gan'",
    "config_not_object": "invalid model config",
    "negative_width": "invalid model config",
    "huge_claim": "weights do not fit a ae",
    "pickled": "not a readable safetensors checkpoint",
}
PICKLE_FILES = ("pickled.safetensors", "pickled_raw.safetensors", "x.pt", "x.ckpt", "x.pth", "x.bin")


class Payload:
    """Unpickling this creates `marker`: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _tensors(model) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def _header(model_name: str, config: dict) -> dict:
    return {"format": "vae-explorer-checkpoint", "format_version": 1, "model": model_name, "config": config,
            "dataset": DIGITS}


def _raw(path: Path, tensors: dict, metadata: str | None) -> None:
    save_file(tensors, str(path), metadata=None if metadata is None else {META_KEY: metadata})


def make_broken(folder: Path, marker: Path) -> None:
    """Every broken or hostile file, written into `folder` under checkpoint-like names."""
    good = (REPO / "checkpoints" / "digits_vae.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (folder / "truncated_header.safetensors").write_bytes(good[:100])
    (folder / "corrupt.safetensors").write_bytes(torch.randint(0, 256, (20_000,), dtype=torch.uint8,
                                                               generator=torch.Generator().manual_seed(0)).numpy()
                                                 .tobytes())
    (folder / "empty.safetensors").write_bytes(b"")

    torch.manual_seed(0)
    ae = build_model("ae", input_shape=(1, 8, 8), latent_dim=2)
    vae = build_model("vae", input_shape=(1, 8, 8), latent_dim=2)
    ae_config = ae.config.to_dict()
    # A header that says vae, with an AE's weights.
    _raw(folder / "wrong_arch.safetensors", _tensors(ae), json.dumps(_header("vae", vae.config.to_dict())))
    for name, value in (("nan_weights", float("nan")), ("inf_weights", float("inf"))):
        bad = build_model("ae", input_shape=(1, 8, 8), latent_dim=2)
        with torch.no_grad():
            next(bad.parameters()).view(-1)[3] = value
        save_checkpoint(folder / name, bad, {"dataset": DIGITS})
    _raw(folder / "no_metadata.safetensors", _tensors(ae), None)
    _raw(folder / "header_not_json.safetensors", _tensors(ae), '{"model": "ae", "config": ')
    _raw(folder / "header_not_object.safetensors", _tensors(ae), json.dumps(["ae", ae_config]))
    _raw(folder / "header_model_list.safetensors", _tensors(ae), json.dumps(_header(["ae"], ae_config)))
    _raw(folder / "unknown_model.safetensors", _tensors(ae), json.dumps(_header("gan", ae_config)))
    _raw(folder / "config_not_object.safetensors", _tensors(ae), json.dumps(_header("ae", "big")))
    _raw(folder / "negative_width.safetensors", _tensors(ae), json.dumps(_header("ae", {**ae_config, "hidden": [-5]})))
    # A few KB of tensors whose header claims 2×200000-wide layers (160 GB of weights): refused, not allocated.
    _raw(folder / "huge_claim.safetensors", _tensors(ae),
         json.dumps(_header("ae", {**ae_config, "hidden": [200000, 200000]})))

    # Pickles under checkpoint names: torch.save's zip, a raw pickle, and the usual pickle suffixes.
    torch.save(Payload(marker), folder / "pickled.safetensors")
    with open(folder / "pickled_raw.safetensors", "wb") as f:
        pickle.dump(Payload(marker), f)
    for name in ("x.pt", "x.ckpt", "x.pth", "x.bin"):
        torch.save({"state_dict": Payload(marker)}, folder / name)


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("marker") / "pickle-ran"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, marker) -> Path:
    folder = copy_checkpoints(tmp_path_factory.mktemp("hostile-checkpoints"))
    make_broken(folder, marker)
    # A real checkpoint outside the folder, and a symlink to it inside.
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(REPO / "checkpoints" / "digits_ae.safetensors", outside / "real.safetensors")
    (folder / "linked.safetensors").symlink_to(outside / "real.safetensors")
    (folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def outside(folder) -> Path:
    return (folder / "linked.safetensors").resolve()


@pytest.fixture
def no_marker(marker):
    """Fails the test if any pickle ran during it."""
    marker.unlink(missing_ok=True)
    yield marker
    assert not marker.exists(), "a pickle payload was executed"


@pytest.fixture(scope="module")
def server(folder):
    """The app over the hostile folder, built after the files exist (so they are in the pickers)."""
    from gradio_client import Client

    ex = Explorer(folder)
    with serve(ex) as url:
        yield Client(url, analytics_enabled=False, verbose=False), url, ex


def _alive(client) -> None:
    assert "digits_vae" in client.predict(api_name="/checkpoints")
    assert "digits_vae" in client.predict("digits_vae", api_name="/model_card")


# ---- broken files ------------------------------------------------------------------------------

def test_the_payload_is_live(tmp_path):
    # The hostile files would really act if unpickled: the tests below can fail.
    m = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(m)))
    assert m.exists()
    m.unlink()
    torch.save(Payload(m), tmp_path / "p.pt")
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert m.exists()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_load_checkpoint_names_the_file(folder, name, no_marker):
    path = folder / f"{name}.safetensors"
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and BROKEN[name] in str(err.value), str(err.value)
    assert "\n" not in str(err.value).strip()
    assert time.perf_counter() - t0 < 5  # the huge claim is refused from the header, not allocated


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_catalog_and_handlers_name_the_file(folder, name, no_marker):
    catalog = Catalog(folder)
    assert name in catalog.names()  # listed (the name is fine) ...
    with pytest.raises(CatalogError) as err:  # ... but refused on loading
        catalog.get(name)
    assert f"{name}.safetensors" in str(err.value) and BROKEN[name] in str(err.value)
    ex = Explorer(folder)
    with pytest.raises(ViewError, match=re.escape(BROKEN[name])):
        ex.card(name)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_server_names_the_file_and_keeps_serving(server, name, no_marker):
    from gradio_client.exceptions import AppError

    client, _, _ = server
    with pytest.raises(AppError) as err:
        client.predict(name, api_name="/model_card")
    assert f"{name}.safetensors" in str(err.value) and BROKEN[name] in str(err.value), str(err.value)
    assert "Something went wrong" not in str(err.value)  # a CheckpointError, not a stray exception
    _alive(client)


def test_a_checkpoint_replaced_by_a_broken_file_is_not_served_from_cache(tmp_path):
    # The catalog caches loaded models; a file rewritten on disk must be read again, and fail.
    folder = copy_checkpoints(tmp_path / "ck")
    catalog = Catalog(folder)
    assert catalog.get("digits_ae").model.name == "ae"
    path = folder / "digits_ae.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CatalogError, match="digits_ae.safetensors"):
        catalog.get("digits_ae")


def test_the_catalog_keeps_its_capacity_of_models_loaded_and_drops_the_least_recently_used(tmp_path):
    # Below the number of checkpoints in use, every request that walks the list reloads a model (and
    # recomputes its codes): the default must hold the shipped checkpoints with room for a class's runs.
    folder = copy_checkpoints(tmp_path / "ck")
    assert 2 * len(Catalog(folder).names()) <= DEFAULT_LOADED_MODELS
    catalog = Catalog(folder, capacity=2)
    ae, vae = catalog.get("digits_ae"), catalog.get("digits_vae")
    assert catalog.get("digits_ae") is ae  # kept: the same loaded model, nothing read again
    catalog.get("digits_conv_ae")  # a third: the least recently used (digits_vae) goes
    assert catalog.get("digits_ae") is ae and catalog.get("digits_vae") is not vae


# ---- pickles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("file", PICKLE_FILES)
def test_pickles_never_run_through_the_library(folder, file, no_marker, tmp_path):
    path = folder / file
    for load in (load_checkpoint, read_metadata, load_train_state):
        with pytest.raises(CheckpointError, match=str(path)):
            load(path)
    catalog = Catalog(folder)
    for name in (path.stem, path.name):
        with pytest.raises(CatalogError):
            catalog.get(name)
        with pytest.raises(CatalogError):
            catalog.metadata(name)
    assert "x" not in catalog.names()  # .pt / .ckpt files are not checkpoints here
    # Resuming training from it reads the header only, and refuses.
    copy = tmp_path / "resume.safetensors"
    shutil.copy(path, copy)
    with pytest.raises(CheckpointError):
        fit(build_model("ae", input_shape=(1, 8, 8)), load_dataset("digits"),
            TrainConfig(epochs=1, device="cpu", checkpoint=str(copy)), resume=True)


@pytest.mark.subprocess
def test_pickles_never_run_through_the_cli(folder, no_marker, tmp_path):
    runs = []
    for file in ("pickled.safetensors", "pickled_raw.safetensors", "x.pt", "x.ckpt"):
        for command in (["eval", "--checkpoint", str(folder / file), "--device", "cpu"],
                        ["sample", "--checkpoint", str(folder / file), "--out", str(tmp_path / f"{file}.png")]):
            runs.append((file, subprocess.Popen([sys.executable, "-m", "vae_explorer", *command], cwd=REPO,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for file, proc in runs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (file, err[-2000:])
        assert err.strip().startswith("vae_explorer: error: ") and file in err, err
    assert not list(tmp_path.glob("*.png"))


SERVER_CALLS = {  # every endpoint that loads a checkpoint, with the pickle in the first model slot
    "latent_map": ("pickled", "digits_vae", "auto", 0),
    "select_point": ("pickled", "digits_vae", 0),
    "manifold": ("pickled", "digits_vae", 15),
    "reconstruct": (["pickled"], "", None, 0),
    "anomalies": ("pickled", 95),
    "slider_setup": ("pickled", 0),
    "decode": ("pickled", 0, *([0.0] * 8)),
    "interpolate": ("pickled", "digits_vae", 0, 1, None, None, "linear", 10),
    "interpolate_at": ("pickled", "digits_vae", 0, 1, None, None, "linear", 0.5),
    "sample": ("pickled", 1.0, 0),
    "denoise": (["pickled"], 0, None, "gaussian", 0.5, 0),
    "model_card": ("pickled",),
}


@pytest.mark.parametrize("api_name", sorted(SERVER_CALLS))
def test_pickles_never_run_through_the_server(server, api_name, no_marker):
    from gradio_client.exceptions import AppError

    client, _, _ = server
    with pytest.raises(AppError, match="pickled.safetensors: not a readable safetensors checkpoint"):
        client.predict(*SERVER_CALLS[api_name], api_name=f"/{api_name}")
    for name in ("pickled_raw", "x.pt", "x"):  # not even offered by the pickers
        with pytest.raises(AppError):
            client.predict(name, api_name="/model_card")
    _alive(client)


# ---- names that try to leave the folder --------------------------------------------------------

def escaping_names(outside: Path) -> list[str]:
    return [
        "../x", "../outside/real", "..", ".", "/etc/passwd", str(outside), str(outside.with_suffix("")),
        "linked", "linked.safetensors", "linked_dir/real", "..%2Fx", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
        "digits_vae\x00", "digits_vae\x00../../etc/passwd", "\x00", "~/x", "sub/digits_vae", "digits_vae/",
        "..\\digits_vae", " ../x", "digits_vae/../digits_ae", ".hidden", "-rf",
    ]


def test_escaping_names_are_refused_by_the_catalog(folder, outside):
    catalog = Catalog(folder)
    assert "linked" not in catalog.names()  # a symlink is not listed ...
    for name in escaping_names(outside):
        for load in (catalog.path, catalog.get, catalog.metadata):
            with pytest.raises(CatalogError) as err:  # ... nor loaded, whatever the spelling
                load(name)
            message = str(err.value)
            assert ("not a checkpoint name" in message or "symbolic links are not loaded" in message), (name, message)
    with pytest.raises(CatalogError, match="symbolic links are not loaded"):
        catalog.get("linked")


def test_escaping_names_are_refused_by_the_handlers(folder, outside):
    ex = Explorer(folder)
    for name in escaping_names(outside) + [""]:
        with pytest.raises(ViewError) as err:
            ex.card(name)
        assert str(err.value), name
        with pytest.raises(ViewError):
            ex.sample(name, 1.0, 0)


def test_escaping_names_are_refused_by_the_server(server, outside):
    from gradio_client.exceptions import AppError

    client, _, _ = server
    for name in escaping_names(outside):
        with pytest.raises(AppError) as err:
            client.predict(name, api_name="/model_card")
        assert "Something went wrong" not in str(err.value), name
        with pytest.raises(AppError):
            client.predict([name], 0, None, "gaussian", 0.5, 0, api_name="/denoise")
    _alive(client)


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "sub/escape", "escape\x00", "..", "%2e%2e%2fescape",
                                  "linked", "digits_vae"])
def test_training_never_writes_outside_or_over(folder, name):
    before = sorted(p.name for p in folder.parent.iterdir())
    with pytest.raises(JobError) as err:
        validate_run(RunSpec("ae", train=TrainConfig(epochs=1)), name, folder)
    assert "not a usable checkpoint name" in str(err.value) or "exists already" in str(err.value)
    assert sorted(p.name for p in folder.parent.iterdir()) == before


def test_saving_over_a_symlink_replaces_the_link_never_its_target(tmp_path):
    # A link under a new checkpoint's name, to a file outside (existing or not): the atomic rename
    # replaces the link itself, so nothing outside the folder is written.
    folder, outside = tmp_path / "ck", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "existing.safetensors").write_bytes(b"outside, untouched")
    (folder / "to_existing.safetensors").symlink_to(outside / "existing.safetensors")
    (folder / "dangling.safetensors").symlink_to(outside / "missing.safetensors")
    model = build_model("ae", input_shape=(1, 8, 8), latent_dim=2)
    for name in ("to_existing", "dangling"):
        path = save_checkpoint(folder / name, model, {"dataset": DIGITS})
        assert not path.is_symlink() and load_checkpoint(path)[0].name == "ae"
    assert (outside / "existing.safetensors").read_bytes() == b"outside, untouched"
    assert not (outside / "missing.safetensors").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["existing.safetensors"]


def test_training_names_are_refused_by_the_server(server, folder):
    from gradio_client.exceptions import AppError

    client, _, ex = server
    for name in ("../escape", "/tmp/escape", "escape\x00", "linked"):
        with pytest.raises(AppError, match="not a usable checkpoint name|exists already"):
            client.predict("ae", "digits", 2, None, "bernoulli", None, 1, 1e-3, 64, "cpu", name, "",
                           api_name="/train_start")
    assert ex.jobs.current is None  # nothing started
    assert not (folder.parent / "escape.safetensors").exists() and not Path("/tmp/escape.safetensors").exists()


def test_the_file_route_does_not_serve_checkpoints(server, folder):
    import httpx

    _, url, _ = server
    with httpx.Client(trust_env=False, timeout=30) as http:
        for target in (str(folder / "digits_vae.safetensors"), "/etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd",
                       str(folder / "linked.safetensors")):
            r = http.get(f"{url}/gradio_api/file={target}")
            assert r.status_code in (403, 404), (target, r.status_code)
            assert b"root:" not in r.content and META_KEY.encode() not in r.content


def test_broken_files_do_not_break_listing(folder):
    names = Catalog(folder).names()
    assert {"digits_vae", "digits_ae"} <= set(names)
    assert not any(n.endswith((".pt", ".ckpt")) or n.startswith(".") for n in names)
    assert os.path.islink(folder / "linked.safetensors") and "linked" not in names

"""Export (issue 14 item 8): codes as CSV and as the Embedding Projector's files, figures as HTML and PNG, and
run bundles whose command trains the same model again. Each file is read back with an independent reader."""
from __future__ import annotations

import io
import math
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_explorer import export
from vae_explorer.checkpoints import load_checkpoint, read_metadata
from vae_explorer.latent import encode_items

REPO = Path(__file__).resolve().parent.parent


def parse_pbtxt(text: str) -> dict:
    """A protobuf text-format message as nested dicts of lists (every field may repeat): enough of the format
    for projector_config.pbtxt (scalars, quoted strings, nested messages)."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:]+', text)
    pos = 0

    def message():
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != "}":
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
                raw = tokens[pos]
                pos += 1
                value = raw[1:-1] if raw.startswith('"') else int(raw) if raw.lstrip("-").isdigit() else raw
            else:
                assert tokens[pos] == "{", f"expected {{ after {name}"
                pos += 1
                value = message()
                assert tokens[pos] == "}"
                pos += 1
            out.setdefault(name, []).append(value)
        return out

    parsed = message()
    assert pos == len(tokens), "trailing text"
    return parsed


def test_codes_csv_round_trips_the_encoded_test_set(explorer):
    path, _ = explorer.export_codes("digits_vae")
    entry = explorer.load("digits_vae")
    model, meta = load_checkpoint(entry.path)
    expected = encode_items(model, entry.data.test_x, entry.kind).numpy()  # an encoder of its own
    codes = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(model.latent_dim), dtype=np.float32)
    np.testing.assert_array_equal(codes, expected)  # 9 significant digits: float32 read back exactly
    labels = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[model.latent_dim], dtype=int)
    np.testing.assert_array_equal(labels, entry.data.test_y.numpy())


def test_a_label_with_a_comma_or_quote_stays_one_field():
    import csv

    text = export.codes_csv(np.array([[1.5, -2.0]], np.float32), np.array([0]), ['a, "b"'])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["1.5", "-2", "0", 'a, "b"']


@pytest.mark.parametrize("n", [359, 50])
def test_projector_files_parse(explorer, n):
    entry = explorer.load("digits_vae")
    images = export.thumbnails(entry.data)[:n]
    codes, labels = entry.codes[:n], entry.labels[:n]
    files = export.projector_files(codes, labels, export.label_names(entry.data)[:n], images, "digits_vae")
    tensors = np.loadtxt(io.StringIO(files["tensors.tsv"].decode()), delimiter="\t", ndmin=2)
    assert tensors.shape == (n, 2)
    np.testing.assert_allclose(tensors, codes, rtol=1e-6)
    meta_lines = files["metadata.tsv"].decode().splitlines()
    assert meta_lines[0].split("\t") == ["index", "label", "label_name"] and len(meta_lines) == n + 1
    assert all(len(line.split("\t")) == 3 for line in meta_lines)
    assert [int(line.split("\t")[1]) for line in meta_lines[1:]] == labels.tolist()
    config = parse_pbtxt(files["projector_config.pbtxt"].decode())
    (embedding,) = config["embeddings"]
    assert embedding["tensor_path"] == ["tensors.tsv"] and embedding["metadata_path"] == ["metadata.tsv"]
    assert embedding["tensor_shape"] == [n, 2]
    (sprite_info,) = embedding["sprite"]
    assert sprite_info["image_path"] == ["sprite.png"] and sprite_info["single_image_dim"] == [8, 8]
    sheet = Image.open(io.BytesIO(files["sprite.png"]))
    side = math.ceil(math.sqrt(n)) * 8
    assert sheet.size == (side, side)
    # Row-major: item k's thumbnail sits in cell (k // per_row, k % per_row).
    per_row, k = math.ceil(math.sqrt(n)), n - 1
    cell = np.asarray(sheet)[(k // per_row) * 8:(k // per_row + 1) * 8, (k % per_row) * 8:(k % per_row + 1) * 8]
    np.testing.assert_array_equal(cell, images[k])


def test_sprites_shrink_to_the_projectors_limit():
    images = np.zeros((300, 600, 600), np.uint8)
    sheet, side = export.sprite(images)
    assert side == export.SPRITE_LIMIT // 18 and sheet.size == (18 * side, 18 * side)


def test_a_table_model_exports_no_sprite(explorer):
    path, note = explorer.export_projector("breast_cancer_tabular_vae")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        config = parse_pbtxt(z.read("breast_cancer_tabular_vae/projector_config.pbtxt").decode())
    assert not any(n.endswith("sprite.png") for n in names) and "sprite" not in config["embeddings"][0]
    assert "no sprite" in note


def test_figure_exports_as_offline_html_and_png(explorer):
    paths, note = explorer.export_figure("digits_vae", "prior vs codes: moments")
    html = Path(paths[0]).read_text()
    # plotly.js is inside the page (megabytes of it), not fetched: no script has a src.
    assert "Plotly.newPlot" in html and len(html) > 1_000_000 and not re.search(r"<script[^>]*\ssrc=", html)
    if len(paths) == 1:  # kaleido could not draw here: the note says why
        assert "No PNG" in note
        pytest.skip(note)
    with Image.open(paths[1]) as im:
        assert im.format == "PNG" and im.size[0] >= 600


def test_a_figure_the_model_lacks_is_refused(explorer):
    from vae_explorer.server import ViewError

    with pytest.raises(ViewError, match="has no codebook usage"):
        explorer.export_figure("digits_vae", "codebook usage")
    with pytest.raises(ViewError, match="figures that export"):
        explorer.export_figure("digits_vae", "nope")


@pytest.mark.subprocess
def test_the_bundles_command_reproduces_the_checkpoint(tmp_path):
    """A tiny run through the CLI; its bundle's command.sh, run, writes a checkpoint with the same model, config
    and training settings, and (same seed, same CPU) the same weights."""
    original = tmp_path / "tiny"
    train = [sys.executable, "-m", "vae_explorer", "train", "--model", "beta_vae", "--latent-dim", "3",
             "--hidden", "32", "--epochs", "2", "--batch-size", "100", "--lr", "0.002", "--seed", "7",
             "--iwae-k", "0", "--device", "cpu", "--quiet", "--out", str(original)]
    subprocess.run(train, check=True, cwd=REPO, capture_output=True, timeout=300)
    bundle = tmp_path / "bundle.zip"
    subprocess.run([sys.executable, "-m", "vae_explorer", "export", "bundle", "--checkpoint", str(original),
                    "--out", str(bundle)], check=True, cwd=REPO, capture_output=True, timeout=120)
    with zipfile.ZipFile(bundle) as z:
        assert set(z.namelist()) == {"tiny.safetensors", "model.json", "metrics.json", "command.sh", "model_card.md"}
        command = z.read("command.sh").decode().strip().splitlines()[-1]
        z.extractall(tmp_path / "unzipped")
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "vae_explorer", "train"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # run where the bundle was unzipped, with this checkout's package
    subprocess.run([sys.executable, *words[1:], "--quiet"], check=True, cwd=tmp_path / "unzipped",
                   capture_output=True, timeout=300, env=env)
    again = tmp_path / "unzipped" / "reproduced" / "tiny.safetensors"
    a, b = read_metadata(str(original) + ".safetensors"), read_metadata(again)
    assert (a["model"], a["config"]) == (b["model"], b["config"])
    keep = {k: v for k, v in a["training"].items() if k != "checkpoint"}
    assert keep == {k: v for k, v in b["training"].items() if k != "checkpoint"}
    ma, _ = load_checkpoint(str(original) + ".safetensors")
    mb, _ = load_checkpoint(again)
    for (name, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        torch.testing.assert_close(x, y, msg=f"weights differ in {name}")


@pytest.mark.subprocess
def test_cli_exports_codes_and_projector(tmp_path):
    for what, out in (("codes", "c.csv"), ("projector", "p.zip")):
        proc = subprocess.run([sys.executable, "-m", "vae_explorer", "export", what, "--checkpoint",
                               str(REPO / "checkpoints" / "digits_vae"), "--out", str(tmp_path / out)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "359 test codes of 2 dimensions" in proc.stdout
    assert np.loadtxt(tmp_path / "c.csv", delimiter=",", skiprows=1, usecols=range(2)).shape == (359, 2)
    with zipfile.ZipFile(tmp_path / "p.zip") as z:
        assert sorted(n.split("/")[1] for n in z.namelist()) == sorted(export.PROJECTOR_FILES)
    proc = subprocess.run([sys.executable, "-m", "vae_explorer", "export", "codes", "--checkpoint", "nope",
                           "--out", str(tmp_path / "x.csv")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no such checkpoint" in proc.stderr

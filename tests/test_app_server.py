"""The running app through gradio_client: every public endpoint answers with the right
kinds of outputs, errors come back as messages, and the server keeps serving."""
from __future__ import annotations

import json
import zipfile
import re
import time

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from .conftest import shown, write_fault_table  # noqa: E402

PUBLIC = {"latent_map", "select_point", "manifold", "reconstruct", "anomalies", "slider_setup", "decode",
          "interpolate", "interpolate_at", "sample", "denoise", "train_start", "train_cancel", "train_status",
          "model_card", "checkpoints", "latent_usage", "prior_fit", "disentanglement", "linear_pca",
          "codebook", "draw_encode", "draw_resample", "dataset_download", "dataset_status", "export_codes",
          "export_projector", "export_figure", "export_bundle", "attribute_vector", "attribute_at"}


@pytest.fixture(scope="module")
def client(app_server):
    url, _ = app_server
    return Client(url, analytics_enabled=False, verbose=False)


def is_png(output, min_side: int = 8) -> bool:
    """An image output (inline, a file, or an update whose value is one) holds a PNG of at least min_side."""
    with Image.open(shown(output)) as im:
        return im.format == "PNG" and min(im.size) >= min_side


def is_plot(value) -> bool:
    """A gr.Plot output: plotly JSON with traces (or an update whose value is one)."""
    value = value["value"] if isinstance(value, dict) and "value" in value and "plot" not in value else value
    plot = json.loads(value["plot"]) if isinstance(value, dict) and "plot" in value else None
    return plot is not None and "data" in plot


def test_every_public_endpoint_is_named(client):
    names = {name.lstrip("/") for name in client.view_api(return_format="dict", print_info=False)["named_endpoints"]}
    assert PUBLIC <= names, PUBLIC - names


def test_map_and_point_endpoints(client):
    left, right, note, _timer = client.predict("digits_ae", "digits_vae", "auto", 3, api_name="/latent_map")
    assert is_plot(left) and is_plot(right) and "359 test images" in note
    index, x, ra, rb, rows, caption = client.predict("digits_ae", "digits_vae", 12, api_name="/select_point")
    assert index == 12 and all(is_png(p) for p in (x, ra, rb)) and "**12**" in caption
    a, _, b, _, text = client.predict("digits_ae", "digits_vq_vae", 9, api_name="/manifold")
    assert is_png(a, 64) and is_png(b, 64) and "9×9" in text


def test_reconstruct_and_anomalies(client, tmp_path):
    grid, _, table = client.predict(["digits_ae", "digits_vae"], "1, 2", None, 0, api_name="/reconstruct")
    assert is_png(grid) and table.count("| digits_") == 2
    up = tmp_path / "up.png"
    Image.new("L", (30, 30), 0).save(up)
    grid, _, table = client.predict(["digits_vq_vae"], "", handle_file(str(up)), 0, api_name="/reconstruct")
    assert is_png(grid) and "upload" in table
    hist, worst, _, text, curves = client.predict("digits_vae", 99, api_name="/anomalies")
    assert is_plot(hist) and is_png(worst) and "99th percentile" in text


def test_slider_setup_and_decode(client):
    *sliders, image, _, text = client.predict("digits_sparse_ae", 0, api_name="/slider_setup")
    assert len(sliders) == 8 and is_png(image) and "principal directions" in text
    values = [s["value"] for s in sliders]
    assert all(s["minimum"] <= s["value"] <= s["maximum"] for s in sliders)
    moved, _ = client.predict("digits_sparse_ae", 0, sliders[0]["maximum"], *values[1:], api_name="/decode")
    assert is_png(moved)
    assert shown(moved).read() != shown(image).read()


def test_interpolate_sample_denoise_card(client):
    strip, _, text = client.predict("digits_ae", "digits_vae", 0, 5, None, None, "spherical", 8,
                                    api_name="/interpolate")
    assert is_png(strip) and "Spherical" in text
    a, _, b, _ = client.predict("digits_ae", "digits_vae", 0, 5, None, None, "linear", 0.3, api_name="/interpolate_at")
    assert is_png(a) and is_png(b)
    a, b, _, _, text, _ = client.predict("digits_vq_vae", 1.0, 0, api_name="/sample")
    assert is_png(a) and is_png(b) and "codebook" in text
    clean, noisy, gallery, _, text = client.predict(["digits_denoising_ae", "digits_ae"], 2, None, "salt_and_pepper",
                                                 0.2, 0, api_name="/denoise")
    assert is_png(clean) and is_png(noisy) and len(gallery) == 3 and "dB" in gallery[0]["caption"]
    card = client.predict("digits_conv_vae", api_name="/model_card")
    assert "| layer | type | parameters |" in card
    assert "digits_vae" in client.predict(api_name="/checkpoints")


def test_diagnostics_through_the_server(client):
    kl, variance, traversals, _, text = client.predict("digits_vae", api_name="/latent_usage")
    assert kl["visible"] is True and is_plot(kl["value"])  # an update: the KL plot shows for a VAE
    assert is_plot(variance) and is_png(traversals) and "dimensions active" in text
    kl, *_ = client.predict("digits_ae", api_name="/latent_usage")
    assert kl["visible"] is False  # an AE has no posterior, so no KL


def test_codebook_view_through_the_server(client):
    """The codebook view over the server: residual VQ shows all four views, a chosen code of a deeper level
    is named, a non-VQ model and a table model get the message naming the VQ models, bad numbers are refused."""
    grid, users, levels, text = client.predict("digits_rvq_vae", 1, None, api_name="/codebook")
    assert is_plot(grid["value"]) and is_png(users) and is_png(levels, 64)
    assert "| 4 | **" in text and "after each level" in text
    _, users, levels, text = client.predict("digits_rvq_vae", 2, 7, api_name="/codebook")
    assert "**Code 7** (level 2)" in text and is_png(users)
    grid, users, levels, text = client.predict("digits_vq_vae", 1, 3, api_name="/codebook")
    assert is_plot(grid["value"]) and levels["visible"] is False and "**Code 3** (level 1)" in text
    for name in ("digits_ae", "breast_cancer_tabular_vae"):
        grid, users, levels, text = client.predict(name, 1, None, api_name="/codebook")
        assert grid["visible"] is False and users["visible"] is False and "vq_vae, rvq_vae" in text
    with pytest.raises(Exception, match="Code must be a whole number from 0 to 63"):
        client.predict("digits_vq_vae", 1, 64, api_name="/codebook")
    with pytest.raises(Exception, match="Level must be a whole number from 1 to 1"):
        client.predict("digits_vq_vae", 2, None, api_name="/codebook")


def test_prior_scorecard_and_pca_views_through_the_server(client):
    *left, left_text, right_moments, right_gap, right_text = client.predict("digits_conv_ae", "digits_conv_vae",
                                                                           api_name="/prior_fit")
    assert all(is_plot(p) for p in (*left, right_moments, right_gap))
    assert "is not this model's prior" in left_text and "is this model's prior" in right_text
    importance, traversals, text = client.predict("sprites_beta_vae", api_name="/disentanglement")
    assert importance["visible"] is True and is_plot(importance["value"]) and is_png(traversals, 64)
    assert "| MIG |" in text and "DCI completeness" in text
    importance, traversals, text = client.predict("digits_vae", api_name="/disentanglement")
    assert importance["visible"] is False and traversals["visible"] is False and "**sprites**" in text
    angles, recon, text = client.predict("digits_linear_ae", api_name="/linear_pca")
    assert is_plot(angles["value"]) and is_png(recon) and "principal angles" in text
    angles, recon, text = client.predict("breast_cancer_tabular_ae", api_name="/linear_pca")  # a table model
    assert angles["visible"] is False and "does not have a linear decoder" in text
    with pytest.raises(Exception, match="not a checkpoint name"):
        client.predict("../digits_vae", api_name="/linear_pca")
    with pytest.raises(Exception, match="no checkpoint named"):
        client.predict("digits_ae", "nope", api_name="/prior_fit")
    assert "digits_ae" in client.predict(api_name="/checkpoints")  # still serving


def test_errors_come_back_as_messages_and_the_server_keeps_serving(client):
    with pytest.raises(Exception, match="out of range"):
        client.predict("digits_ae", "digits_vae", 99999, api_name="/select_point")
    with pytest.raises(Exception, match="not a checkpoint name"):
        client.predict("../../etc/passwd", api_name="/model_card")
    with pytest.raises(Exception, match="learning rate"):
        client.predict("vae", "digits", 2, 1.0, "bernoulli", None, 5, -1.0, 64, "auto", "", "", api_name="/train_start")
    with pytest.raises(Exception, match="beta does not apply to model ae"):  # as the CLI says it
        client.predict("ae", "digits", 2, 4.0, "bernoulli", None, 5, 1e-3, 64, "auto", "", "", api_name="/train_start")
    assert "digits_ae" in client.predict(api_name="/checkpoints")


def test_training_through_the_server(client, app_server):
    _, explorer = app_server
    status, curves, history, _timer = client.predict("ae", "digits", 2, None, "bernoulli", 0.0, 2, 1e-3, 64, "auto",
                                                     "served_ae", "", api_name="/train_start")
    assert "served_ae" in status
    deadline = time.time() + 90
    while time.time() < deadline and explorer.jobs.current.running:
        time.sleep(0.3)
    status, curves, history = client.predict(api_name="/train_status")
    assert "finished" in status and is_plot(curves) and is_png(history)
    assert "served_ae" in client.predict(api_name="/checkpoints")
    assert "served_ae" in client.predict("served_ae", api_name="/model_card")


def test_a_table_uploaded_trained_and_scored_through_the_server(client, app_server, tmp_path):
    """The Train tab's call with a CSV: the file travels as an upload, the label and ignored columns as text;
    the finished checkpoint's anomaly view answers with rows (a table), ROC and PR curves, and a ROC-AUC
    that finds the rows breaking the normal rows' relation."""
    _, explorer = app_server
    csv = write_fault_table(tmp_path / "faults.csv")
    status, *_ = client.predict("tabular_ae", "csv", 2, None, None, None, 30, 3e-3, 64, "auto", "served_table", "",
                                handle_file(str(csv)), "kind", "id", api_name="/train_start")
    assert "served_table" in status and "csv" in status
    deadline = time.time() + 300  # 30 epochs of 1,500 rows: seconds alone, minutes on a busy machine
    while time.time() < deadline and explorer.jobs.current.running:
        time.sleep(0.3)
    status, curves, _history = client.predict(api_name="/train_status")
    assert "finished" in status and "rows/s" in status and is_plot(curves), status
    assert "served_table" in client.predict(api_name="/checkpoints")
    card = client.predict("served_table", api_name="/model_card")
    assert "| colour | categorical | 3 seen" in card and "| b | continuous" in card and "| id |" not in card, card

    hist, image, rows, text, detection = client.predict("served_table", 95, "percentile", api_name="/anomalies")
    assert is_plot(hist) and is_plot(detection)
    assert image is None  # a table model's rows go to the table (the page shows it when the model is chosen)
    shown = rows
    assert {"a", "b", "colour"} <= set(shown["headers"]) and len(shown["data"]) >= 8
    auc = float(re.search(r"ROC-AUC \*\*([\d.]+)\*\*", text).group(1))
    assert auc > 0.9, text  # faults are 2-3 standard deviations off the line every normal row is on


def test_draw_encode_and_resample(client, app_server):
    """A drawing (a PNG data URL, dark ink on white) through the API and through the page's own server function:
    both answer each map model's point, ellipse and pictures, where the explorer itself puts them."""
    import base64
    import io

    import requests
    from PIL import ImageDraw

    url, ex = app_server
    im = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(im).line([(80, 60), (200, 220)], fill="black", width=40)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    drawing = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    answer = client.predict("digits_ae", "digits_conv_vae", "auto", drawing, api_name="/draw_encode")
    left, right = answer["maps"]
    expected = [ex.encode_drawing([n], "auto", drawing=drawing)[0] for n in ("digits_ae", "digits_conv_vae")]
    for got, want in zip((left, right), expected):
        assert (got["x"], got["y"], got["method"]) == (want["x"], want["y"], want["method"])
        for key in ("input", "reconstruction"):
            png = base64.b64decode(got[key].split(",", 1)[1])
            with Image.open(io.BytesIO(png)) as im:
                assert im.format == "PNG" and im.size == want[key].size
    assert left["ellipse"] is None and right["ellipse"]["semi_axes"] == expected[1]["ellipse"]["semi_axes"]
    samples = client.predict("digits_ae", "digits_conv_vae", drawing, 4, api_name="/draw_resample")["maps"]
    assert samples[0]["picture"] is None and "no posterior" in samples[0]["caption"]
    assert samples[1]["picture"].startswith("data:image/png;base64,")
    bad = client.predict("digits_vae", "breast_cancer_tabular_vae", "auto", drawing, api_name="/draw_encode")["maps"]
    assert "x" in bad[0] and "image models" in bad[1]["error"]

    # The page's path: the sketchpad's server function, one POST.
    config = requests.get(f"{url}/config", timeout=30).json()
    pad = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "draw_pad")
    body = {"session_hash": "drawtest", "component_id": pad, "fn_name": "draw_encode",
            "data": {"left": "digits_ae", "right": "digits_conv_vae", "projection": "auto", "drawing": drawing}}
    page = requests.post(f"{url}/gradio_api/component_server/", json=body, timeout=30).json()
    assert [(m["x"], m["y"]) for m in page["maps"]] == [(left["x"], left["y"]), (right["x"], right["y"])]
    body["data"] = "not an object"
    assert "error" in requests.post(f"{url}/gradio_api/component_server/", json=body, timeout=30).json()


def test_a_dataset_download_offline_through_the_server(client):
    """The server's data folder has no MNIST and this machine is offline: the download answers with the files
    expected and the folder for them, and the shipped MNIST models still sample."""
    status, _timer = client.predict("mnist", api_name="/dataset_download")
    text = status["value"] if isinstance(status, dict) else status
    deadline = time.time() + 300  # the connection check is quick; a busy machine is slow to start threads
    while "connecting" in text and time.time() < deadline:
        time.sleep(0.5)
        text = client.predict("mnist", api_name="/dataset_status")
    assert "offline" in text and "MNIST/raw" in text and "t10k-labels-idx1-ubyte" in text, text
    a, b, _, _, caption, _ = client.predict("mnist_vae_2d", 1.0, 0, api_name="/sample")
    assert is_png(a) and "not in this server's data folder" in caption
    with pytest.raises(Exception, match="train-images-idx3-ubyte"):
        client.predict("mnist_ae_2d", "mnist_vae_2d", "auto", 3, api_name="/latent_map")
    with pytest.raises(Exception, match="not in the list of choices"):  # the picker's own check comes first
        client.predict("digits", api_name="/dataset_download")


def test_export_endpoints_give_files(client):
    """Codes as CSV, the projector zip, a figure as HTML (+ PNG where kaleido can draw) and the run bundle."""
    files, note = client.predict("digits_vae", api_name="/export_codes")
    codes = np.loadtxt(files[0], delimiter=",", skiprows=1, usecols=range(2))
    assert codes.shape == (359, 2) and "np.loadtxt" in note
    files, _ = client.predict("digits_vae", api_name="/export_projector")
    with zipfile.ZipFile(files[0]) as z:
        assert {"digits_vae/tensors.tsv", "digits_vae/projector_config.pbtxt"} <= set(z.namelist())
    files, note = client.predict("digits_vae", "KL per dimension", api_name="/export_figure")
    assert any(f.endswith(".html") for f in files) and "KL" in open(files[0]).read()
    files, note = client.predict("digits_vae", api_name="/export_bundle")
    with zipfile.ZipFile(files[0]) as z:
        assert "digits_vae/command.sh" in z.namelist()
    assert "python -m vae_explorer train --model vae" in note
    with pytest.raises(Exception, match="has no KL per dimension"):
        client.predict("digits_ae", "KL per dimension", api_name="/export_figure")


def test_attribute_vector_endpoints(client):
    strip, _rows, fig, text = client.predict("digits_vae", "1", "7", 5, api_name="/attribute_vector")
    assert is_png(strip) and is_plot(fig) and "Consistency" in text
    moved, _ = client.predict("digits_vae", "1", "7", 5, 0.5, api_name="/attribute_at")
    assert is_png(moved)
    with pytest.raises(Exception, match="two different groups"):
        client.predict("digits_vae", "2", "2", 5, api_name="/attribute_vector")

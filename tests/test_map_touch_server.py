"""The touchable map's endpoints on the running server, through gradio_client: decode at a map position
(named endpoint), the page's map-click bridge, typed coordinates, the hover sprite sheet as a static file."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from .conftest import shown  # noqa: E402


@pytest.fixture(scope="module")
def client(app_server):
    url, _ = app_server
    return Client(url, analytics_enabled=False, verbose=False)


def test_decode_at_answers_an_image_of_that_position(client, app_server):
    _, ex = app_server
    image, rows, caption = client.predict("digits_vae", "auto", 0.4, -0.7, api_name="/decode_at")
    assert "decoded at (0.400, -0.700)" in caption and "RAW map" in caption
    expected, _ = ex.decode_at("digits_vae", "raw", 0.4, -0.7)
    np.testing.assert_array_equal(np.asarray(Image.open(shown(image)).convert("L")), np.asarray(expected.convert("L")))
    # a wider code: the PCA map's back-projection
    _, _, caption = client.predict("digits_conv_vae", "pca", 1.0, 0.5, api_name="/decode_at")
    assert "PCA map" in caption and "other 6 coordinates at the mean" in caption


def test_decode_at_refuses_bad_input_with_a_message(client):
    for args, words in [(("digits_vae", "auto", "left", 0), "must be a number"),
                        (("digits_vae", "tsne", 0, 0), "not in the list of choices"),
                        (("no_such_model", "auto", 0, 0), "no_such_model")]:
        with pytest.raises(Exception, match=words):
            client.predict(*args, api_name="/decode_at")
    with pytest.raises(Exception, match="JSON object"):
        client.predict("[1, 2]", api_name="/map_click_left")
    client.predict("digits_ae", "auto", 0, 0, api_name="/decode_at")  # and the server still answers


def test_the_page_bridge_and_typed_coordinates_decode(client):
    click = json.dumps({"model": "digits_ae", "projection": "raw", "x": 2.5, "y": 4.0, "seq": 1})
    image, _, caption = client.predict(click, api_name="/map_click_right")
    assert shown(image) and "digits_ae" in caption and "(2.500, 4.000)" in caption
    out = client.predict("digits_ae", "digits_vae", "auto", "1.5, -0.5", api_name="/decode_coordinates")
    assert shown(out[0]) and shown(out[3]) and "(1.500, -0.500)" in out[2] and "(1.500, -0.500)" in out[5]
    with pytest.raises(Exception, match="two numbers"):
        client.predict("digits_ae", "digits_vae", "auto", "1.5", api_name="/decode_coordinates")


def test_the_sprite_sheet_is_served_and_nothing_else_of_the_checkpoints(client, app_server):
    url, ex = app_server
    sheet = ex.hover_tiles("digits_ae")
    with urllib.request.urlopen(f"{url}/gradio_api/file={sheet.file}", timeout=10) as r:
        assert r.headers["Content-Type"] == "image/png"
        served = np.asarray(Image.open(r).convert("L"))
    np.testing.assert_array_equal(served, np.asarray(Image.open(sheet.file).convert("L")))
    checkpoint = ex.catalog.root / "digits_ae.safetensors"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/gradio_api/file={checkpoint}", timeout=10)
    assert refused.value.code == 403

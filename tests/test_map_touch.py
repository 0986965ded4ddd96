"""The touchable latent map as plain functions: decoding anywhere on a map (raw, PCA, UMAP) and the hover
sprite sheets, checked against independent references (the model's own decoder, sklearn's PCA, scipy's hull)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vae_explorer.latent import pca_2d
from vae_explorer.server import ViewError


def pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32)


def decoded_by_model(entry, z) -> np.ndarray:
    """The model's own decoder at code z, as the pixels the explorer shows (to_pil's rounding)."""
    with torch.no_grad():
        out = entry.model.decode(torch.as_tensor(np.asarray(z, np.float32))[None]).clamp(0, 1)
    return (out[0, 0].numpy() * 255 + 0.5).astype(np.uint8).astype(np.float32)


@pytest.mark.parametrize("name", ["digits_ae", "digits_vae"])
def test_decode_at_a_points_own_raw_code_is_decoding_that_code(explorer, name):
    entry = explorer.load(name)
    assert entry.model.latent_dim == 2
    for i in (0, 17, 123):
        x, y = (float(v) for v in entry.codes[i])
        image, caption = explorer.decode_at(name, "raw", x, y)
        scale = image.size[0] // 8
        np.testing.assert_array_equal(pixels(image)[::scale, ::scale], decoded_by_model(entry, entry.codes[i]))
        assert "RAW map" in caption and "exact" in caption
    # "auto" is the raw plane for 2-D codes: the same picture
    auto, _ = explorer.decode_at(name, "auto", x, y)
    np.testing.assert_array_equal(pixels(auto), pixels(image))


def test_decode_at_on_the_pca_map_is_sklearn_pcas_inverse_transform(explorer):
    from sklearn.decomposition import PCA

    name = "digits_conv_vae"  # 8-D codes: the map shows PCA
    entry = explorer.load(name)
    codes = entry.codes.astype(np.float64)
    reference = PCA(n_components=2).fit(codes)
    shown = pca_2d(entry.codes, entry.axes)  # the map's coordinates of every test code
    # Principal directions are defined up to sign: match sklearn's to the map's, per axis.
    signs = np.sign([np.corrcoef(shown[:, k], reference.transform(codes)[:, k])[0, 1] for k in range(2)])
    for x, y in [(0.0, 0.0), tuple(shown[5]), (1.5, -2.0)]:
        z, method, how = explorer.map_point_code(name, "pca", x, y)
        expected = reference.inverse_transform(np.array([[signs[0] * x, signs[1] * y]]))[0]
        np.testing.assert_allclose(z, expected, atol=1e-4)
        assert method == "pca" and "other 6 coordinates at the mean" in how
        image, caption = explorer.decode_at(name, "pca", x, y)
        scale = image.size[0] // 8
        np.testing.assert_allclose(pixels(image)[::scale, ::scale], decoded_by_model(entry, expected), atol=1.0)
        assert "PCA map" in caption
    # The map's own point: its code's projection onto the plane through the mean, as sklearn projects it.
    z5, _, _ = explorer.map_point_code(name, "auto", *shown[5])
    np.testing.assert_allclose(z5, reference.inverse_transform(reference.transform(codes[5:6]))[0], atol=1e-4)


def test_decode_at_refuses_bad_input_clearly(explorer):
    for x, y, words in [(float("nan"), 0, "x coordinate must be a number"),
                        (0, float("inf"), "y coordinate must be a number"),
                        ("left", 0, "x coordinate must be a number"), (0, None, "got null"),
                        (True, 0, "got true"), ([1, 2], 0, "got \\[1, 2\\]")]:
        with pytest.raises(ViewError, match=words):
            explorer.decode_at("digits_ae", "raw", x, y)
    with pytest.raises(ViewError, match="projection must be one of auto, raw, pca, umap"):
        explorer.decode_at("digits_ae", "tsne", 0, 0)
    with pytest.raises(ViewError, match="choose a model"):
        explorer.decode_at("", "raw", 0, 0)
    with pytest.raises(ViewError):
        explorer.decode_at("no_such_model", "raw", 0, 0)


def test_decode_at_a_table_model_gives_a_row(explorer):
    table, caption = explorer.decode_at("breast_cancer_tabular_ae", "auto", 0.1, 0.2)
    assert len(table) == 1 and "PCA map" in caption


@pytest.mark.parametrize("name, projection", [("digits_vae", "raw"), ("digits_conv_vae", "pca"),
                                              ("digits_vq_vae", "auto")])
def test_the_pages_plane_is_the_servers_code_at_every_map_point(explorer, name, projection):
    """The page decodes the dragged marker itself from map_page's spec (offset + (x, y) · directions): at any
    map position that code must be the one the server's decode_at uses, and the decoder the sliders' file."""
    spec = explorer.map_page(name, projection)
    assert spec["decoder"] == str(explorer.page_decoder(name).index_file) != "None"
    for x, y in [(0.0, 0.0), (0.7, -1.3), (-2.5, 0.4)]:
        z, method, _ = explorer.map_point_code(name, projection, x, y)
        page = np.asarray(spec["offset"]) + np.array([x, y]) @ np.asarray(spec["directions"])
        np.testing.assert_allclose(page, z, atol=1e-5)
        assert spec["projection"] == method
    # It rides on the map's figure, for the same projection the map shows.
    meta = explorer.latent_map(name, projection).figure.layout.meta
    assert meta["map"]["page"] == spec


def test_the_server_decodes_where_the_page_cannot(explorer):
    assert explorer.map_page("digits_vae", "umap")["decoder"] is None
    assert "UMAP" in explorer.map_page("digits_vae", "umap")["reason"]
    table = explorer.map_page("breast_cancer_tabular_ae", "auto")
    assert table["decoder"] is None and "table" in table["reason"]


@pytest.mark.subprocess
def test_decode_at_on_a_umap_map_marks_points_outside_the_hull(explorer):
    from scipy.spatial import ConvexHull

    from tests.conftest import wait_for

    name = "digits_vae"
    entry = explorer.load(name)
    assert wait_for(lambda: explorer.umap.get(entry.key, entry.codes) is not None, 300, poll=0.5)
    embedding = explorer.umap.get(entry.key, entry.codes)
    hull = ConvexHull(embedding)  # independent of the explorer's Delaunay test: the hull's half-planes

    def inside(p):
        return bool(np.all(hull.equations[:, :2] @ p + hull.equations[:, 2] <= 1e-9))

    lo, hi = embedding.min(0), embedding.max(0)
    far = hi + (hi - lo)  # beyond every point
    own = embedding[3]  # a test code's own place on the map
    assert not inside(far) and inside(own)
    z_far, method, how_far = explorer.map_point_code(name, "umap", *far)
    assert method == "umap" and "unreliable" in how_far and "convex hull" in how_far
    z_own, _, how_own = explorer.map_point_code(name, "umap", *own)
    assert "unreliable" not in how_own and z_own.shape == (2,)
    # inverse_transform near a code's own place lands among the codes: nearer to that code than most are
    spread = np.linalg.norm(entry.codes - entry.codes.mean(0), axis=1)
    assert np.linalg.norm(z_own - entry.codes[3]) < np.median(spread)
    image, caption = explorer.decode_at(name, "umap", *far)
    assert image.size[0] > 8 and "unreliable" in caption


def test_hover_sprite_sheet_holds_every_test_image_at_its_index(explorer, tmp_path):
    from vae_explorer.data import DATASETS
    from vae_explorer.server.hover_tiles import HoverTiles

    name = "digits_vae"
    entry = explorer.load(name)
    sheet = explorer.hover_tiles(name)
    meta = explorer.latent_map(name).figure.layout.meta
    assert meta["tiles"] == sheet.as_meta(str(sheet.file))
    assert {k: meta["map"][k] for k in ("model", "projection")} == {"model": name, "projection": "raw"}
    assert sheet.file.parent == explorer.catalog.root / "hover_tiles"
    picture = np.asarray(Image.open(sheet.file).convert("L"))
    items = entry.data.test_x.numpy()  # (N, 1, 8, 8) uint8
    assert sheet.count == len(items) and (sheet.width, sheet.height) == (8, 8)
    for i in (0, 1, 99, 100, 101, len(items) - 1):
        left, top = sheet.position(i)
        assert (left, top) == ((i % sheet.columns) * 8, (i // sheet.columns) * 8)
        np.testing.assert_array_equal(picture[top:top + 8, left:left + 8], items[i, 0])
    # Models of one dataset share a sheet; the file is named by the items: changed items, another file.
    assert explorer.hover_tiles("digits_ae").file == sheet.file
    tiles = HoverTiles(tmp_path)
    kind = entry.data.kind
    changed = entry.data.test_x.clone()
    changed[0, 0, 0, 0] ^= 1
    first, second = tiles.sheet(entry.data.test_x, kind, "digits-test"), tiles.sheet(changed, kind, "digits-test")
    assert first.file != second.file and first.file.exists() and second.file.exists()
    # Table rows are not pictures: no sheet, the map keeps its text hover.
    assert explorer.hover_tiles("breast_cancer_tabular_ae") is None
    assert explorer.latent_map("breast_cancer_tabular_ae").figure.layout.meta["tiles"] is None
    assert tiles.sheet(torch.zeros(3, 4), DATASETS["breast_cancer"].kind, "rows") is None

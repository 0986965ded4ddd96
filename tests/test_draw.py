"""Draw to encode (issue 13, items 3-4) as functions: a drawing or an uploaded image is encoded by a map's
models, placed where the map puts its code, with a VAE's 2-σ posterior ellipse in the map's coordinates, and
resampled from q(z|x). Checked against numpy's own PCA and the maps' own figures."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vae_explorer.latent import map_ellipse
from vae_explorer.server import ViewError


def data_url(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def stroke(points=((140, 40), (140, 240)), side: int = 280, width: int = 40) -> Image.Image:
    """What the sketchpad sends: dark ink on a white canvas."""
    im = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(im).line(list(points), fill="black", width=width)
    return im


def png_of_test_image(explorer, name: str, index: int, tmp_path) -> str:
    """Test image `index` of the model's data as a PNG file at its own size (exact: no resizing happens)."""
    entry = explorer.load(name)
    pixels = entry.data.test_x[index].numpy()
    path = tmp_path / f"test_{index}.png"
    Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(path)
    return str(path)


def figure_points(explorer, name: str, projection: str = "auto") -> np.ndarray:
    """(N, 2) every test code's point on the model's map, by index, read from the map's own figure."""
    fig = explorer.latent_map(name, projection).figure
    n = len(explorer.load(name).codes)
    out = np.full((n, 2), np.nan)
    for trace in fig.data:
        if trace.name == "selected":
            continue
        out[np.asarray(trace.customdata, int)] = np.stack([trace.x, trace.y], 1)
    return out


def quadratic_form(ellipse: dict, centre, cov) -> np.ndarray:
    """(p - centre)ᵀ cov⁻¹ (p - centre) for each of the ellipse's points."""
    d = np.stack([ellipse["x"], ellipse["y"]], 1) - np.asarray(centre)
    return np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)


@pytest.mark.parametrize("name", ["digits_ae", "digits_conv_vae", "digits_vq_vae"])
def test_an_uploaded_test_image_lands_on_its_own_point(explorer, name, tmp_path):
    """A test image uploaded as a file is read exactly (same size, same ink), so its code is the test code and
    its mark sits on that test point of the map (raw plane for the 2-D AE, PCA for the others)."""
    i = 17
    path = png_of_test_image(explorer, name, i, tmp_path)
    placed = explorer.encode_drawing([name], "auto", upload=path)[0]
    entry = explorer.load(name)
    np.testing.assert_allclose(placed["code"], entry.codes[i], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([placed["x"], placed["y"]], figure_points(explorer, name)[i], rtol=1e-4, atol=1e-4)
    assert placed["method"] == ("raw" if entry.model.latent_dim <= 2 else "pca")
    # The same picture drawn in the page (a PNG data URL) is the same input: drawings are read as uploads are.
    drawn = explorer.encode_drawing([name], "auto", drawing=data_url(Image.open(path)))[0]
    assert drawn["code"] == placed["code"] and (drawn["x"], drawn["y"]) == (placed["x"], placed["y"])


def test_a_drawing_is_converted_as_an_upload_is(explorer, tmp_path):
    """Dark ink on white, 280×280 RGB: resized to 8×8 grey and inverted to the digits' white ink on black,
    exactly as the same picture uploaded as a file."""
    im = stroke()
    path = tmp_path / "drawing.png"
    im.save(path)
    drawn = explorer.encode_drawing(["digits_vae"], "auto", drawing=data_url(im))[0]
    uploaded = explorer.encode_drawing(["digits_vae"], "auto", upload=str(path))[0]
    assert drawn["code"] == uploaded["code"]
    assert "grey 8×8" in drawn["conversion"] and "inverted" in drawn["conversion"]
    seen = np.asarray(drawn["input"], np.float32)
    assert seen.shape[0] == seen.shape[1] and seen.shape[0] % 8 == 0
    scale = seen.shape[0] // 8
    pixels = seen[::scale, ::scale]
    assert pixels[:, 0].max() < 30 and pixels[3:5, 3:5].min() > 100  # black border, a bright vertical stroke
    # Any input size: the sprites model (32×32) takes the same drawing at its own size.
    sprite = explorer.encode_drawing(["sprites_beta_vae"], "auto", drawing=data_url(im))[0]
    assert "grey 32×32" in sprite["conversion"] and len(sprite["code"]) == explorer.load("sprites_beta_vae").model.latent_dim


def test_raw_two_d_ellipse_has_two_sigma_along_the_axes(explorer):
    placed = explorer.encode_drawing(["digits_vae"], "raw", drawing=data_url(stroke()))[0]
    entry = explorer.load("digits_vae")
    x = entry.kind.read_drawing(base64.b64decode(data_url(stroke()).split(",")[1]), entry.input_shape,
                                entry.kind.prepare(entry.data.test_x[:200]))[0]
    with torch.no_grad():
        q = entry.model.posterior(x)
    mean, std = q.mean[0].double().numpy(), q.std[0].double().numpy()
    np.testing.assert_allclose([placed["x"], placed["y"]], mean, rtol=1e-6)
    np.testing.assert_allclose(placed["std"], std, rtol=1e-6)
    e = placed["ellipse"]
    # Axis-aligned: the extent along z[0] is 2σ_0 and along z[1] is 2σ_1.
    np.testing.assert_allclose(np.max(np.abs(np.asarray(e["x"]) - mean[0])), 2 * std[0], rtol=1e-6)
    np.testing.assert_allclose(np.max(np.abs(np.asarray(e["y"]) - mean[1])), 2 * std[1], rtol=1e-6)
    np.testing.assert_allclose(sorted(e["semi_axes"]), sorted(2 * std), rtol=1e-6)
    np.testing.assert_allclose(quadratic_form(e, mean, np.diag(std ** 2)), 4.0, rtol=1e-6)
    assert "2-σ" in placed["note"]


def test_pca_ellipse_is_the_projected_covariance(explorer):
    """On a PCA map (8-D codes) the ellipse is W Σ Wᵀ with W the top two principal directions: computed here
    with numpy's eigh of the codes' covariance, each direction's sign taken from the map's own points."""
    name = "digits_conv_vae"
    placed = explorer.encode_drawing([name], "auto", drawing=data_url(stroke(((60, 60), (220, 220)))))[0]
    assert placed["method"] == "pca"
    codes = np.asarray(explorer.load(name).codes, np.float64)
    values, vectors = np.linalg.eigh(np.cov(codes.T))
    top = vectors[:, np.argsort(values)[::-1][:2]].T  # (2, D)
    points = figure_points(explorer, name)
    centred = codes - codes.mean(0)
    signs = np.sign([np.dot(centred @ top[k], points[:, k]) for k in range(2)])
    W = top * signs[:, None]
    np.testing.assert_allclose(centred @ W.T, points, atol=1e-3)  # the same frame as the map
    mean, std = np.asarray(placed["code"]), np.asarray(placed["std"])
    centre = W @ (mean - codes.mean(0))
    cov = W @ np.diag(std ** 2) @ W.T
    np.testing.assert_allclose([placed["x"], placed["y"]], centre, atol=1e-4)
    np.testing.assert_allclose(placed["ellipse"]["cov"], cov, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(quadratic_form(placed["ellipse"], centre, cov), 4.0, rtol=2e-3)
    assert "projected" in placed["note"]


def inside_polygon(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd ray casting: which of (M, 2) points lie inside the closed (K, 2) polygon."""
    inside = np.zeros(len(points), bool)
    x, y = points[:, 0], points[:, 1]
    for (x0, y0), (x1, y1) in zip(polygon[:-1], polygon[1:]):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside


def test_map_ellipse_against_sampling():
    """About 86.5% of N(centre, cov)'s mass lies inside its 2-σ ellipse (chi-square, 2 dof: 1 - e^{-2})."""
    rng = np.random.default_rng(0)
    centre, cov = np.array([1.0, -2.0]), np.array([[2.0, 0.9], [0.9, 0.7]])
    e = map_ellipse(centre, cov, points=721)
    inside = inside_polygon(np.stack([e["x"], e["y"]], 1), rng.multivariate_normal(centre, cov, 200_000))
    assert abs(inside.mean() - (1 - np.exp(-2))) < 0.005
    np.testing.assert_allclose(np.square(e["semi_axes"]), 4 * np.sort(np.linalg.eigvalsh(cov))[::-1], rtol=1e-9)


def test_umap_map_marks_the_nearest_code_and_draws_no_ellipse(explorer):
    name = "digits_vae"
    entry = explorer.load(name)
    emb = explorer.umap.get(entry.key, entry.codes)
    if emb is None:
        pytest.skip("no cached UMAP of digits_vae in the checkpoints copy")
    code = np.array([0.3, -0.7])
    placed = explorer.map_position(name, "umap", code, std=[0.5, 0.5])
    nearest = int(np.argmin(np.linalg.norm(np.asarray(entry.codes, np.float64) - code, axis=1)))
    assert placed["method"] == "umap" and placed["ellipse"] is None and placed["nearest"] == nearest
    assert (placed["x"], placed["y"]) == (float(emb[nearest, 0]), float(emb[nearest, 1]))
    assert "no ellipse" in placed["note"]


def test_resample_decodes_different_samples_for_a_vae_and_says_why_not_for_an_ae(explorer):
    drawing = data_url(stroke())
    sampled = explorer.resample_drawing("digits_vae", drawing, k=6, seed=3)
    assert sampled.items.shape == (6, 1, 8, 8)
    flat = sampled.items.flatten(1)
    assert torch.cdist(flat, flat)[~torch.eye(6, dtype=torch.bool)].min() > 1e-3  # six different decodes
    assert torch.equal(explorer.resample_drawing("digits_vae", drawing, k=6, seed=3).items, sampled.items)
    assert sampled.picture is not None and "q(z|x)" in sampled.caption
    plain = explorer.resample_drawing("digits_ae", drawing)
    assert plain.items is None and plain.picture is None and "no posterior" in plain.caption


def test_ae_has_a_point_and_no_ellipse(explorer):
    placed = explorer.encode_drawing(["digits_ae"], "auto", drawing=data_url(stroke()))[0]
    assert placed["std"] is None and placed["ellipse"] is None
    np.testing.assert_allclose([placed["x"], placed["y"]], placed["code"], rtol=1e-6)  # a 2-D code: the raw plane


def test_table_models_and_bad_drawings_get_messages(explorer):
    assert "image models" in explorer.drawable("breast_cancer_tabular_vae")
    assert explorer.drawable("digits_vae") is None
    with pytest.raises(ViewError, match="image models"):
        explorer.encode_drawing(["breast_cancer_tabular_vae"], "auto", drawing=data_url(stroke()))
    for bad, message in [("", "draw something"), ("hello", "data URL"), ("data:image/png;base64,@@@", "base64"),
                         ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "not an image"),
                         (None, "draw something")]:
        with pytest.raises(ViewError, match=message):
            explorer.encode_drawing(["digits_vae"], "auto", drawing=bad)
    with pytest.raises(ViewError, match="number of samples"):
        explorer.resample_drawing("digits_vae", data_url(stroke()), k=0)

"""Hostile and unusual image uploads: each is refused with a message that names the
problem, or converted with a note the user sees, through the handlers and through
the running server, and the server keeps answering afterwards.

The files are built here, byte by byte where needed (a decompression bomb of a few
KB claiming 20000×20000 pixels, a truncated PNG/JPEG, a text file called .png).
"""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_explorer import build_model, save_checkpoint
from vae_explorer.data.images import MAX_UPLOAD_BYTES, UploadError, load_upload
from vae_explorer.server import Explorer, ViewError

from .conftest import copy_checkpoints, serve, shown

GREY, RGB = (1, 8, 8), (3, 8, 8)
RGB_MODEL = "tiny_rgb_ae"

# file name -> words the refusal must contain
REFUSED = {
    "not_an_image.png": "not an image",
    "truncated.png": "damaged or truncated",
    "truncated.jpg": "damaged or truncated",
    "empty.png": "the file is empty",
    "bomb_20000x20000.png": "decompression bomb",
    "bomb_7000x7000.png": "decompression bomb",
    "over_limit.png": "over the 10 MB upload limit",
}
# file name -> words of the conversion note shown with the result
CONVERTED = {
    "animated.gif": "first of 3 frames",
    "deep_16bit.png": "high bit depth scaled to 8 bits",
    "rgba.png": "transparency over black",
    "palette.png": "palette expanded",
    "cmyk.jpg": "CMYK converted",
    "one_pixel.png": "1×1",
    "grey.png": "L, → grey",
    "colour.png": "RGB, → grey",
}


# ---- building the files -------------------------------------------------------------------

def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(size: int) -> bytes:
    """A valid 1-bit PNG of size×size black pixels: a few KB on disk, size² pixels decoded."""
    row = b"\x00" * (1 + (size + 7) // 8)  # filter byte + packed bits
    idat = zlib.compress(row * size, 9)
    ihdr = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def noise_rgb(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def half_transparent() -> Image.Image:
    """Left half opaque white, right half fully transparent white."""
    a = np.full((16, 16, 4), 255, np.uint8)
    a[:, 8:, 3] = 0
    return Image.fromarray(a, "RGBA")


def two_colours() -> Image.Image:
    a = np.zeros((16, 16, 3), np.uint8)
    a[:8] = (255, 0, 0)
    a[8:] = (0, 0, 255)
    return Image.fromarray(a, "RGB")


def make_uploads(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    photo = noise_rgb()
    frames = [Image.new("L", (16, 16), v) for v in (60, 200, 255)]
    files = {
        "not_an_image.png": b"hello, I am a text file with an image's name\n" * 20,
        "truncated.png": _encode(photo, "PNG")[:3000],
        "truncated.jpg": _encode(photo, "JPEG", quality=90)[:2000],
        "empty.png": b"",
        "bomb_20000x20000.png": bomb_png(20000),
        "bomb_7000x7000.png": bomb_png(7000),
        # a real PNG followed by junk: just over the upload limit
        "over_limit.png": _encode(photo, "PNG") + bytes(MAX_UPLOAD_BYTES + 1),
        "animated.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "deep_16bit.png": _encode(Image.fromarray(np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)),
                                  "PNG"),
        "dark_16bit.png": _encode(Image.fromarray(np.full((16, 16), 200, np.uint16)), "PNG"),
        "rgba.png": _encode(half_transparent(), "PNG"),
        "palette.png": _encode(two_colours().convert("P"), "PNG"),
        "cmyk.jpg": _encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG", quality=95),  # white
        "one_pixel.png": _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "grey.png": _encode(photo.convert("L"), "PNG"),
        "colour.png": _encode(two_colours(), "PNG"),
        "notes.txt": b"not an image either\n",
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path]:
    files = make_uploads(tmp_path_factory.mktemp("uploads"))
    assert files["bomb_20000x20000.png"].stat().st_size < 200_000  # small on disk, 400 megapixels inside
    assert files["over_limit.png"].stat().st_size > MAX_UPLOAD_BYTES
    return files


def add_rgb_model(folder: Path) -> None:
    """An untrained 3-channel AE over the digits in colour (the dataset's RGB conversion)."""
    torch.manual_seed(0)
    model = build_model("ae", input_shape=RGB, latent_dim=2)
    save_checkpoint(folder / RGB_MODEL, model, {"dataset": {"name": "digits", "root": None, "image_size": None,
                                                            "channels": 3}, "epoch": 0, "metrics": []})


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    folder = copy_checkpoints(tmp_path_factory.mktemp("upload-checkpoints"))
    add_rgb_model(folder)
    return folder


@pytest.fixture(scope="module")
def ex(checkpoint_dir):
    explorer = Explorer(checkpoint_dir)
    yield explorer
    explorer.umap.close()


@pytest.fixture(scope="module")
def server(checkpoint_dir):
    """The real app over the checkpoints (with the RGB model); yields a gradio_client Client."""
    from gradio_client import Client

    with serve(Explorer(checkpoint_dir)) as url:
        yield Client(url, analytics_enabled=False, verbose=False), url


# ---- load_upload: the pixels of each conversion -----------------------------------------------

@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("shape", [GREY, RGB])
def test_load_upload_refuses_with_a_message_naming_file_and_problem(uploads, name, shape):
    t0 = time.perf_counter()
    with pytest.raises(UploadError) as err:
        load_upload(uploads[name], shape)
    assert str(err.value).startswith(f"{name}: ")
    assert REFUSED[name] in str(err.value)
    assert time.perf_counter() - t0 < 3  # refused from the header, not after decoding 400 megapixels


def test_bomb_messages_say_how_big(uploads):
    with pytest.raises(UploadError, match="7000×7000 pixels is more than the 40 megapixels"):
        load_upload(uploads["bomb_7000x7000.png"], GREY)


def test_missing_upload_is_refused(tmp_path):
    with pytest.raises(UploadError, match="no file was uploaded"):
        load_upload(None, GREY)
    with pytest.raises(UploadError, match="could not be read"):
        load_upload(tmp_path / "gone.png", GREY)


def test_animated_gif_takes_the_first_frame(uploads):
    x, note = load_upload(uploads["animated.gif"], GREY)
    assert x.shape == GREY and x.dtype == torch.uint8
    assert (x.int() - 60).abs().max() <= 2, x  # the first frame (60), not the later 200 or 255
    assert "GIF 16×16" in note and "first of 3 frames" in note


def test_16bit_png_is_scaled_to_8_bits(uploads):
    x, note = load_upload(uploads["deep_16bit.png"], GREY)
    assert "I;16" in note and "high bit depth scaled to 8 bits" in note
    assert x.min() <= 20 and x.max() >= 235  # a 0..65535 ramp spans the 8-bit range (averaged down to 8×8)
    assert (x.flatten().diff() >= 0).float().mean() > 0.8  # and stays a ramp (row-major, increasing)


def test_dark_16bit_png_stays_dark(uploads):
    # 200 of 65535 is black: the 16-bit range is fixed, not stretched to the picture's brightest pixel.
    x, _ = load_upload(uploads["dark_16bit.png"], GREY)
    assert x.max() <= 2, x


def test_rgba_is_composited_over_black(uploads):
    for shape in (GREY, RGB):
        x, note = load_upload(uploads["rgba.png"], shape)
        assert "RGBA" in note and "transparency over black" in note
        assert x[:, :, :3].min() >= 250 and x[:, :, 5:].max() <= 5, x  # opaque white left, transparent right


def test_palette_image_matches_its_colours(uploads):
    x, note = load_upload(uploads["palette.png"], RGB)
    assert "palette expanded" in note
    red, blue = x[:, 1, 4].tolist(), x[:, 6, 4].tolist()
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert blue[0] < 15 and blue[1] < 15 and blue[2] > 240


def test_cmyk_jpeg_is_converted(uploads):
    x, note = load_upload(uploads["cmyk.jpg"], RGB)
    assert "CMYK" in note and "CMYK converted" in note
    assert x.float().mean() > 240  # CMYK (0, 0, 0, 0) is white, not black or inverted


def test_one_pixel_image_is_upscaled(uploads):
    x, note = load_upload(uploads["one_pixel.png"], RGB)
    assert "1×1" in note and "→ RGB 8×8" in note
    assert x.shape == RGB
    assert torch.equal(x, torch.tensor([200, 10, 10], dtype=torch.uint8).view(3, 1, 1).expand(RGB))
    g, _ = load_upload(uploads["one_pixel.png"], GREY)
    assert (g.int() - 67).abs().max() <= 1  # ITU-R 601 luma of (200, 10, 10)


def test_grey_into_rgb_and_rgb_into_grey(uploads):
    x, note = load_upload(uploads["grey.png"], RGB)
    assert x.shape == RGB and "L, → RGB 8×8" in note
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey replicated to three channels
    y, note = load_upload(uploads["colour.png"], GREY)
    assert y.shape == GREY and "RGB, → grey 8×8" in note
    assert 70 <= int(y[0, 1, 4]) <= 80 and 25 <= int(y[0, 6, 4]) <= 32  # luma of pure red (76), pure blue (29)


def test_extension_is_not_trusted(uploads, tmp_path):
    # A real PNG named .jpg is read as the PNG it is; the text file named .png is refused above.
    misnamed = tmp_path / "really_a_png.jpg"
    misnamed.write_bytes(uploads["colour.png"].read_bytes())
    _, note = load_upload(misnamed, RGB)
    assert note.startswith("PNG 16×16 RGB")


# ---- through the handlers ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFUSED))
def test_handlers_refuse_with_the_message(ex, uploads, name):
    with pytest.raises(ViewError) as err:
        ex.denoise(["digits_ae"], 0, str(uploads[name]), "gaussian", 0.3, 0)
    assert name in str(err.value) and REFUSED[name] in str(err.value)
    with pytest.raises(ViewError, match=REFUSED[name]):
        ex.reconstruct(["digits_ae", "digits_vae"], "", str(uploads[name]))
    with pytest.raises(ViewError, match=REFUSED[name]):
        ex.interpolation_strip(["digits_ae", "digits_vae"], 0, 1, str(uploads[name]), None)


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_handlers_show_the_conversion(ex, uploads, name):
    clean, noisy, outputs, text = ex.denoise(["digits_ae"], 0, str(uploads[name]), "gaussian", 0.3, 0)
    assert CONVERTED[name] in text
    assert clean.size == noisy.size == (128, 128) and clean.mode == "L"  # the grey model's 8×8, shown ×16
    assert [label.split(":")[0] for _, label in outputs] == ["digits_ae", "PCA, 2 components"]
    _, table = ex.reconstruct(["digits_ae"], "", str(uploads[name]))
    assert CONVERTED[name] in table and "| upload |" in table


def test_grey_upload_into_an_rgb_model(ex, uploads):
    clean, _, outputs, text = ex.denoise([RGB_MODEL], 0, str(uploads["grey.png"]), "gaussian", 0.2, 0)
    assert "L, → RGB 8×8" in text
    assert clean.mode == "RGB" and outputs[0][1].startswith(f"{RGB_MODEL}: ")
    a = np.asarray(clean)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_rgb_upload_into_a_grey_model(ex, uploads):
    clean, _, _, text = ex.denoise(["digits_vae"], 0, str(uploads["colour.png"]), "gaussian", 0.2, 0)
    assert "RGB, → grey 8×8" in text and clean.mode == "L"


def test_models_of_different_shapes_are_kept_apart(ex, uploads):
    # The first model sets the image size; a model of another shape is skipped with a note, not crashed into.
    _, _, outputs, _ = ex.denoise([RGB_MODEL, "digits_ae"], 0, str(uploads["grey.png"]), "gaussian", 0.2, 0)
    assert "digits_ae: skipped, it takes (1, 8, 8) images" in [label for _, label in outputs]
    with pytest.raises(ViewError, match="choose models of one input shape"):
        ex.reconstruct([RGB_MODEL, "digits_ae"], "", str(uploads["grey.png"]))


# ---- through the running server -------------------------------------------------------------

def _still_serving(client) -> None:
    names = client.predict(api_name="/checkpoints")
    assert "digits_ae" in names and RGB_MODEL in names


@pytest.mark.parametrize("name", sorted(set(REFUSED) - {"over_limit.png"}))
def test_server_refuses_with_the_message(server, uploads, name):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, _ = server
    with pytest.raises(AppError) as err:
        client.predict(["digits_ae"], 0, handle_file(str(uploads[name])), "gaussian", 0.3, 0, api_name="/denoise")
    assert name in str(err.value) and REFUSED[name] in str(err.value)
    assert "Something went wrong" not in str(err.value)  # a message for the user, not a caught crash
    _still_serving(client)


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_server_shows_the_conversion(server, uploads, name):
    from gradio_client import handle_file

    client, _ = server
    clean, _, outputs, _, text = client.predict(["digits_ae"], 0, handle_file(str(uploads[name])), "gaussian", 0.3,
                                                0, api_name="/denoise")
    assert CONVERTED[name] in text
    assert Image.open(shown(clean)).size == (128, 128) and len(shown(outputs)) == 2
    _still_serving(client)


def test_server_rgb_model_takes_grey_and_colour(server, uploads):
    from gradio_client import handle_file

    client, _ = server
    for name in ("grey.png", "one_pixel.png", "rgba.png"):
        clean, _, _, _, text = client.predict([RGB_MODEL], 0, handle_file(str(uploads[name])), "gaussian", 0.2, 0,
                                              api_name="/denoise")
        assert "→ RGB 8×8" in text and Image.open(shown(clean)).mode == "RGB", name
    _still_serving(client)


def test_server_reconstruct_refuses_a_text_file(server, uploads):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, _ = server
    with pytest.raises(AppError, match="not an image"):
        client.predict(["digits_ae"], "", handle_file(str(uploads["not_an_image.png"])), 0, api_name="/reconstruct")
    _still_serving(client)


def test_server_refuses_a_non_image_extension(server, uploads):
    # The File component only takes image types; whichever layer refuses, the user gets an error and no result.
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, _ = server
    with pytest.raises(AppError) as err:
        client.predict(["digits_ae"], 0, handle_file(str(uploads["notes.txt"])), "gaussian", 0.3, 0,
                       api_name="/denoise")
    assert "Invalid file type" in str(err.value) or "notes.txt: not an image" in str(err.value)
    _still_serving(client)


def test_server_refuses_an_upload_over_the_limit(server, uploads):
    import httpx
    from gradio_client import handle_file

    client, url = server
    big = uploads["over_limit.png"]
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks first
        client.predict(["digits_ae"], 0, handle_file(str(big)), "gaussian", 0.3, 0, api_name="/denoise")
    # A client that does not check: the server itself refuses the upload.
    with httpx.Client(trust_env=False, timeout=60) as http:
        with big.open("rb") as f:
            r = http.post(f"{url}/gradio_api/upload", files={"files": (big.name, f, "image/png")})
        assert r.status_code == 413, (r.status_code, r.text[:200])
        with uploads["colour.png"].open("rb") as f:  # and a small one still goes through
            ok = http.post(f"{url}/gradio_api/upload", files={"files": ("colour.png", f, "image/png")})
        assert ok.status_code == 200
    _still_serving(client)

"""The image data kind: how images are stored (uint8), fed to models (float in
[0, 1]), shown (PIL images and grids), corrupted (the denoise view and the
denoising AE) and read from a user's upload.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .dataset import UploadError

NOISE_KINDS = ("gaussian", "masking", "salt_and_pepper")


def pil_to_uint8(im: Image.Image, shape: tuple[int, int, int]) -> torch.Tensor:
    """Any PIL image -> (C, H, W) uint8 at `shape`.

    Takes the first frame of animations, applies EXIF rotation, scales 16-bit and
    float modes to 8 bits, composites transparency over black (the background of
    the digit datasets), converts palette/CMYK/grey/colour to the wanted channels.
    """
    c, h, w = shape
    im.seek(0) if getattr(im, "is_animated", False) else None
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            hi = 65535.0  # the format's range, not the picture's brightest pixel: a dark 16-bit image stays dark
        elif im.mode == "I":
            hi = 65535.0 if a.max() > 255 else 255.0  # 32-bit ints hold 16-bit (some PNG readers) or 8-bit data
        else:  # "F": [0, 1] floats, or an unknown range scaled to its maximum
            hi = max(a.max(), 1.0)
        im = Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, rgba)
    im = im.convert("L" if c == 1 else "RGB")
    im = im.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    a = np.asarray(im, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(a.copy())


def to_pil(x: torch.Tensor, scale: int = 1) -> Image.Image:
    """(C, H, W) float in [0, 1] -> PIL image, optionally upscaled with crisp pixels."""
    a = (x.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    im = Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    return im


# zlib's fastest level: half the time of the default 6 for 10-20% more bytes on the app's grids (1.2 ms and
# 19 KB for an MNIST sample grid, against 2.3 ms and 17 KB). Pictures are encoded on every answer.
PNG_COMPRESS_LEVEL = 1


def png_bytes(im: Image.Image) -> bytes:
    with io.BytesIO() as out:
        im.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return out.getvalue()


def png_data_url(picture: Image.Image | bytes) -> str:
    """A PIL image (or its PNG bytes) as a PNG data URL: a page shows it without fetching a file."""
    import base64

    data = picture if isinstance(picture, bytes) else png_bytes(picture)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_grid(x: torch.Tensor, nrow: int, padding: int = 1, scale: int = 1) -> Image.Image:
    """(N, C, H, W) float in [0, 1] -> one PIL image with `nrow` images per row on a grey frame.

    Copied into place here rather than by torchvision's make_grid: the explorer then never imports
    torchvision, which costs seconds at start-up.
    """
    x = x.detach().float().clamp(0, 1).cpu()
    n, c, h, w = x.shape
    ncol = max(1, min(nrow, n))
    rows = max(1, -(-n // ncol))
    grid = torch.full((c, rows * (h + padding) + padding, ncol * (w + padding) + padding), 0.5)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return to_pil(grid, scale)


def label_rows(im: Image.Image, labels: list[str], pitch: int, top: int = 0) -> Image.Image:
    """`im` with a dark margin on the left holding labels[r] beside row r (rows `pitch` pixels apart, the first
    starting `top` pixels down). Pillow's bundled font: nothing is read from the system or the network."""
    from PIL import ImageDraw, ImageFont

    size = int(min(16, max(11, pitch // 3)))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: its fixed bitmap font
        font = ImageFont.load_default()
    width = int(max(font.getlength(text) for text in labels)) + 12
    out = Image.new(im.mode, (im.width + width, im.height), 40 if im.mode == "L" else (40, 40, 40))
    out.paste(im, (width, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(labels):
        centre = top + r * pitch + (pitch - top) / 2
        draw.text((6, centre), text, fill=255 if im.mode == "L" else (255, 255, 255), font=font, anchor="lm")
    return out


MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the server's upload limit as well (app.py)
MAX_UPLOAD_PIXELS = 40_000_000  # width × height; larger headers are refused before decoding




def load_upload(path, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """A user's image file -> ((C, H, W) uint8 at `shape`, a note saying what was converted).

    Refuses empty, oversized, non-image and truncated files and decompression bombs
    with a message; never trusts the file name's extension.
    """
    if path is None:
        raise UploadError("no file was uploaded")
    name = os.path.basename(str(path))
    try:
        size = os.path.getsize(path)
    except OSError:
        raise UploadError(f"{name}: the upload could not be read") from None
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {size / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
    return _read_picture(path, name, shape)


def load_drawing(data: bytes, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """A picture drawn in the page (PNG bytes) -> ((C, H, W) uint8 at `shape`, a note): read exactly as an
    uploaded file is, with the same limits."""
    if not data:
        raise UploadError("the drawing is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"the drawing: {len(data) / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB limit")
    return _read_picture(io.BytesIO(data), "the drawing", shape)


def _read_picture(source, name: str, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """An image file or file-like object -> ((C, H, W) uint8 at `shape`, a note), or an UploadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w * h > MAX_UPLOAD_PIXELS:
                    raise UploadError(f"{name}: {w}×{h} pixels is more than the {MAX_UPLOAD_PIXELS // 10**6} "
                                      "megapixels accepted (a decompression bomb?)")
                frames = getattr(im, "n_frames", 1)
                mode, fmt = im.mode, im.format
                im.load()
                x = pil_to_uint8(im, shape)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image (PNG, JPEG, WebP, GIF, BMP, TIFF are read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{name}: too many pixels (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(f"{name}: the image is damaged or truncated ({' '.join(str(e).split())[:120]})") from None
    c, th, tw = shape
    steps = [f"{fmt or 'image'} {w}×{h} {mode}"]
    if frames > 1:
        steps.append(f"first of {frames} frames")
    if mode in ("RGBA", "LA", "PA") or (mode == "P"):
        steps.append("transparency over black" if mode != "P" else "palette expanded")
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        steps.append("high bit depth scaled to 8 bits")
    if mode == "CMYK":
        steps.append("CMYK converted")
    steps.append(f"→ {'grey' if c == 1 else 'RGB'} {tw}×{th}")
    return x, ", ".join(steps)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of x against ref, both (B, C, H, W) in [0, 1]: (B,)."""
    mse = (x - ref).square().flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1], in one pass (true division promotes to float32)."""
    return x / 255.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float images in [0, 1] -> uint8, rounded."""
    return (x.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def add_noise(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt images (B, C, H, W) in [0, 1]; the result stays in [0, 1].

    gaussian: x + level * N(0, 1), clipped. masking: each pixel zeroed with
    probability `level`. salt_and_pepper: each pixel set to 0 or 1 with
    probability `level`.
    """
    if not level >= 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    if level == 0:
        return x
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
        return (x + level * noise.to(x.device)).clamp(0, 1)
    if level > 1:
        raise ValueError(f"{kind} noise level is a probability, got {level}")
    u = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device).to(x.device)
    if kind == "masking":
        return torch.where(u < level, torch.zeros_like(x), x)
    if kind == "salt_and_pepper":
        salt = u < level / 2
        pepper = (u >= level / 2) & (u < level)
        return torch.where(salt, torch.ones_like(x), torch.where(pepper, torch.zeros_like(x), x))
    raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")


def _border_mean(x: torch.Tensor) -> float:
    """Mean brightness of the outermost pixel ring of (B, C, H, W) images."""
    border = torch.cat([x[..., 0, :].flatten(), x[..., -1, :].flatten(), x[..., :, 0].flatten(), x[..., :, -1].flatten()])
    return float(border.mean())


class ImageKind:
    """Images: stored (N, C, H, W) uint8, models see float (B, C, H, W) in [0, 1]."""

    name = "image"
    item = "image"  # what one item is called on the page
    shown_as = "image"
    linear_baseline = True  # PCA on the flattened pixels is a fair baseline
    noise_kinds = NOISE_KINDS
    error_name = "MSE per pixel"
    fidelity_name = "PSNR"

    @staticmethod
    def prepare(stored: torch.Tensor) -> torch.Tensor:
        """Stored items -> what models take."""
        return to_float(stored)

    @staticmethod
    def store(x: torch.Tensor) -> torch.Tensor:
        """What models output -> the stored form (the inverse of `prepare`, rounded)."""
        return to_uint8(x)

    @staticmethod
    def model_settings(items: torch.Tensor) -> dict:
        """The model config fields the data decides: the shape of one image."""
        return {"input_shape": tuple(items.shape[1:])}

    @staticmethod
    def errors(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) reconstruction error per item, in `error_name` units."""
        return (recon.float() - x.float()).square().flatten(1).mean(1)

    @staticmethod
    def quality(recon: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-item measures of a reconstruction, (B,) each, for evaluation."""
        recon = recon.float()
        return {"mse_per_pixel": (recon - x).square().flatten(1).mean(1), "psnr": psnr(recon, x)}

    @staticmethod
    def fidelity(x: torch.Tensor, ref: torch.Tensor) -> str:
        """How close x is to ref, for people: PSNR in dB (higher is better)."""
        return f"{float(psnr(x.float(), ref.float()).mean()):.1f} dB"

    @staticmethod
    def scale_for(item_shape, target: int) -> int:
        """Integer upscaling so an image shows about `target` pixels high, pixels crisp."""
        return max(1, target // item_shape[-2])

    def show(self, x: torch.Tensor, target: int = 128) -> Image.Image:
        """One item (C, H, W) as a picture about `target` pixels high."""
        return to_pil(x, self.scale_for(x.shape, target))

    def grid(self, x: torch.Tensor, nrow: int, target: int = 48, padding: int = 1, labels=None,
             row_labels: list[str] | None = None) -> Image.Image:
        """Items (N, C, H, W) as one picture, `nrow` per row, each about `target` pixels high (labels: unused,
        a picture's rows speak for themselves); row_labels: a text per row, written in a margin on the left."""
        scale = self.scale_for(x.shape, target)
        im = image_grid(x, nrow=nrow, padding=padding, scale=scale)
        return im if not row_labels else label_rows(im, row_labels, (x.shape[-2] + padding) * scale, padding * scale)

    def blank(self, item_shape, target: int = 128) -> Image.Image:
        """A grey placeholder the size of one shown item."""
        return self.show(torch.full(tuple(item_shape), 0.5), target)

    @staticmethod
    def noise_limit(kind: str) -> float:
        return 3.0 if kind == "gaussian" else 1.0

    @staticmethod
    def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None,
                columns: list[str] | None = None) -> torch.Tensor:
        if columns:
            raise ValueError("images are corrupted pixel by pixel: choosing columns applies to tables")
        return add_noise(x, kind, level, generator)

    @staticmethod
    def clean_output(x: torch.Tensor) -> torch.Tensor:
        """A model's output as views use it: float images in [0, 1] on the CPU."""
        return x.detach().float().clamp(0, 1).cpu()

    @staticmethod
    def concat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)

    @staticmethod
    def explain(recon: torch.Tensor, x: torch.Tensor) -> str:
        return ""  # the pictures say it

    def flagged(self, x: torch.Tensor, recon: torch.Tensor, row_names: list[str], scores) -> Image.Image:
        """The flagged images over their reconstructions, one column each."""
        return self.grid(torch.cat([x, recon]), nrow=len(x), target=48)

    @staticmethod
    def attributes(items: torch.Tensor) -> dict:
        return {}

    def read_upload(self, path, item_shape, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
        """A user's file -> ((1, C, H, W) float model input, a note saying what was done to it).

        reference: some of the training items (prepared); when they are light strokes on black
        (digits) and the upload is dark ink on paper, the upload is inverted to match.
        """
        return _like_training(*load_upload(path, tuple(item_shape)), reference)

    def read_drawing(self, png: bytes, item_shape, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
        """A picture drawn in the page (PNG bytes, dark ink on white) -> ((1, C, H, W) float model input, a
        note): converted as an upload is, inverted where the training images are light strokes on black."""
        return _like_training(*load_drawing(png, tuple(item_shape)), reference)


def _like_training(raw: torch.Tensor, note: str, reference: torch.Tensor | None) -> tuple[torch.Tensor, str]:
    """(C, H, W) uint8 picture -> (1, C, H, W) float, inverted when `reference` (some prepared training items)
    is light strokes on black (digits) and the picture is dark ink on paper."""
    x = to_float(raw[None])
    if reference is not None and len(reference) and _border_mean(reference) < 0.2 and _border_mean(x) > 0.5:
        x = 1.0 - x
        note += ", inverted (light background, unlike the training images)"
    return x, note


IMAGES = ImageKind()

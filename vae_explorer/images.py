"""Conversions between PIL images, uint8 tensors and float tensors, and image grids."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps


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


MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the server's upload limit as well (app.py)
MAX_UPLOAD_PIXELS = 40_000_000  # width × height; larger headers are refused before decoding


class UploadError(ValueError):
    """An uploaded file that cannot be used as an image; the message says why, for the user."""


def load_upload(path, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """A user's image file -> ((C, H, W) uint8 at `shape`, a note saying what was converted).

    Refuses empty, oversized, non-image and truncated files and decompression bombs
    with a message; never trusts the file name's extension.
    """
    import os
    import warnings

    from PIL import UnidentifiedImageError

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
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

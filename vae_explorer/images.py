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
        hi = 65535.0 if im.mode.startswith("I") and a.max() > 255 else max(a.max(), 1.0)
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
    """(N, C, H, W) float in [0, 1] -> one PIL image with `nrow` images per row."""
    from torchvision.utils import make_grid

    grid = make_grid(x.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding, pad_value=0.5)
    if x.shape[1] == 1:
        grid = grid[:1]
    return to_pil(grid, scale)

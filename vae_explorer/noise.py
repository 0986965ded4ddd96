"""Image corruptions for denoising: training the denoising AE and the Denoise view."""
from __future__ import annotations

import torch

NOISE_KINDS = ("gaussian", "masking", "salt_and_pepper")


def add_noise(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt images (B, C, H, W) in [0, 1]; the result stays in [0, 1].

    gaussian: x + level * N(0, 1), clipped. masking: each pixel zeroed with
    probability `level`. salt_and_pepper: each pixel set to 0 or 1 with
    probability `level`.
    """
    if level < 0:
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

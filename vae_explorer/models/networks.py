"""Encoder and decoder backbones shared by every model: images <-> flat vectors.

`arch="mlp"` flattens the image through Linear layers; `arch="conv"` uses
stride-2 Conv2d layers down and ConvTranspose2d layers back up, for any
image size (output padding restores odd sizes exactly).
"""
from __future__ import annotations

import math

from torch import nn


def activation_layer(name: str | None) -> nn.Module:
    return {"relu": nn.ReLU(), "none": nn.Identity(), None: nn.Identity(), "leaky_relu": nn.LeakyReLU(0.2)}[name]


def _conv_sizes(size: int, n_layers: int) -> list[int]:
    # Conv2d(k=3, s=2, p=1) maps n -> ceil(n / 2).
    sizes = [size]
    for _ in range(n_layers):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class MLPEncoder(nn.Module):
    def __init__(self, input_shape, hidden, out_dim, activation="relu"):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), activation_layer(activation)]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, H, W) -> (B, out_dim)
        return self.net(x)


class MLPDecoder(nn.Module):
    def __init__(self, input_shape, hidden, in_dim, activation="relu"):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in reversed(hidden):
            layers += [nn.Linear(width, h), activation_layer(activation)]
            width = h
        layers += [nn.Linear(width, math.prod(input_shape)), nn.Unflatten(1, tuple(input_shape))]
        self.net = nn.Sequential(*layers)

    def forward(self, z):  # (B, in_dim) -> (B, C, H, W) raw likelihood parameters
        return self.net(z)


class ConvEncoder(nn.Module):
    def __init__(self, input_shape, channels, out_dim, activation="relu"):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, kernel_size=3, stride=2, padding=1), activation_layer(activation)]
            c = ch
        hs, ws = _conv_sizes(h, len(channels)), _conv_sizes(w, len(channels))
        layers += [nn.Flatten(), nn.Linear(c * hs[-1] * ws[-1], out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, H, W) -> (B, out_dim)
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(self, input_shape, channels, in_dim, activation="relu"):
        super().__init__()
        c_out, h, w = input_shape
        hs, ws = _conv_sizes(h, len(channels)), _conv_sizes(w, len(channels))
        chans = list(reversed(channels))
        layers: list[nn.Module] = [
            nn.Linear(in_dim, chans[0] * hs[-1] * ws[-1]),
            activation_layer(activation),
            nn.Unflatten(1, (chans[0], hs[-1], ws[-1])),
        ]
        for i in range(len(chans)):
            # ConvTranspose2d(k=3, s=2, p=1) maps n -> 2n - 1 + output_padding.
            n_h, n_w = hs[-1 - i], ws[-1 - i]
            pad = (hs[-2 - i] - (2 * n_h - 1), ws[-2 - i] - (2 * n_w - 1))
            last = i == len(chans) - 1
            out_ch = c_out if last else chans[i + 1]
            layers.append(nn.ConvTranspose2d(chans[i], out_ch, 3, stride=2, padding=1, output_padding=pad))
            if not last:
                layers.append(activation_layer(activation))
        self.net = nn.Sequential(*layers)

    def forward(self, z):  # (B, in_dim) -> (B, C, H, W) raw likelihood parameters
        return self.net(z)


def build_encoder(config, out_dim: int) -> nn.Module:
    if config.arch == "conv":
        return ConvEncoder(config.input_shape, config.channels, out_dim, config.activation)
    return MLPEncoder(config.input_shape, config.hidden, out_dim, config.activation)


def build_decoder(config, in_dim: int) -> nn.Module:
    if config.arch == "conv":
        return ConvDecoder(config.input_shape, config.channels, in_dim, config.activation)
    return MLPDecoder(config.input_shape, config.hidden, in_dim, config.activation)

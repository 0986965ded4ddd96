"""A decoder as the page can run it: a list of plain layer ops plus named float32 arrays.

`describe` walks a decoder's modules generically (Sequential containers, wrappers around one
child, and the leaf layers below), so a family built from these layers needs nothing of its
own; a layer it does not know makes the description None and the page asks the server.
`run` is the reference interpreter of a description in numpy, the one the page's
decoder.js mirrors (vae_explorer/server/static/decoder.js); the server checks every
description against the model's own `decode` with it before sending it to a page.

Ops (x is one item; tensors are named by the "w"/"b"/... fields):
  linear {w (out, in), b (out)}            relu   leaky_relu {slope}   sigmoid   tanh
  reshape {shape}  (C, H, W) or (N,)       affine {scale (C), shift (C)}: x[c] * scale[c] + shift[c]
  conv2d {w (Cout, Cin, k, k), b, stride, padding}
  conv_transpose2d {w (Cin, Cout, k, k), b, stride, padding, output_padding}
  upsample {factor}: nearest-neighbour, integer factor
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


class Unsupported(ValueError):
    """A decoder the page cannot run; the message names what stopped it."""


@dataclass
class PageDecoder:
    """What the page needs to decode a code (latent_dim,) into an item of `output_shape`."""

    latent_dim: int
    output_shape: tuple[int, ...]
    ops: list[dict]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # float32

    def index(self) -> dict:
        """JSON-able: the ops, and where each tensor lies in `blob()` (offsets in float32 elements)."""
        where, offset = {}, 0
        for name, a in self.tensors.items():
            where[name] = {"shape": list(a.shape), "offset": offset}
            offset += a.size
        return {"format": 1, "latent_dim": self.latent_dim, "output_shape": list(self.output_shape),
                "ops": self.ops, "tensors": where, "floats": offset}

    def blob(self) -> bytes:
        """Every tensor, flattened in `index()` order, as little-endian float32."""
        if not self.tensors:
            return b""
        return np.concatenate([a.ravel() for a in self.tensors.values()]).astype("<f4").tobytes()

    def describe(self) -> str:
        """A short account for people: "linear 2→256, relu, linear 256→64, reshape 1×8×8, sigmoid"."""
        parts = []
        for op in self.ops:
            kind = op["op"]
            if kind == "linear":
                out, inp = self.tensors[op["w"]].shape
                parts.append(f"linear {inp}→{out}")
            elif kind in ("conv2d", "conv_transpose2d"):
                w = self.tensors[op["w"]].shape
                cin, cout = (w[1], w[0]) if kind == "conv2d" else (w[0], w[1])
                parts.append(f"{'conv' if kind == 'conv2d' else 'conv-transpose'} {cin}→{cout}")
            elif kind == "reshape":
                parts.append("reshape " + "×".join(map(str, op["shape"])))
            else:
                parts.append(kind)
        return ", ".join(parts)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32, copy=True)


class _Builder:
    def __init__(self):
        self.ops: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}

    def tensor(self, t) -> str:
        name = f"t{len(self.tensors)}"
        self.tensors[name] = _array(t) if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
        return name

    def add(self, module: nn.Module, where: str) -> None:
        m = module
        if isinstance(m, nn.Sequential):
            for i, child in enumerate(m):
                self.add(child, f"{where}.{i}")
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            pass  # evaluation: nothing happens
        elif isinstance(m, nn.Linear):
            self.ops.append({"op": "linear", "w": self.tensor(m.weight),
                             "b": self.tensor(m.bias if m.bias is not None else torch.zeros(m.out_features))})
        elif isinstance(m, nn.ReLU):
            self.ops.append({"op": "relu"})
        elif isinstance(m, nn.LeakyReLU):
            self.ops.append({"op": "leaky_relu", "slope": float(m.negative_slope)})
        elif isinstance(m, nn.Sigmoid):
            self.ops.append({"op": "sigmoid"})
        elif isinstance(m, nn.Tanh):
            self.ops.append({"op": "tanh"})
        elif isinstance(m, nn.Unflatten):
            if m.dim != 1:  # dim 0 is the batch
                raise Unsupported(f"{where}: Unflatten over dim {m.dim}")
            self.ops.append({"op": "reshape", "shape": [int(s) for s in m.unflattened_size]})
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise Unsupported(f"{where}: Flatten of dims {m.start_dim}..{m.end_dim}")
            self.ops.append({"op": "reshape", "shape": [-1]})
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            # Evaluation mode: a per-channel affine map with the running statistics (folded here, once).
            if m.running_mean is None:
                raise Unsupported(f"{where}: batch norm without running statistics")
            scale = torch.rsqrt(m.running_var.double() + m.eps)
            weight = m.weight.double() if m.weight is not None else torch.ones_like(scale)
            bias = m.bias.double() if m.bias is not None else torch.zeros_like(scale)
            self.ops.append({"op": "affine", "scale": self.tensor((weight * scale).float()),
                             "shift": self.tensor((bias - m.running_mean.double() * weight * scale).float())})
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            square = lambda v: v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v  # noqa: E731
            k, s, p = square(m.kernel_size), square(m.stride), square(m.padding)
            if any(isinstance(v, (tuple, str)) for v in (k, s, p)) or m.groups != 1 or set(m.dilation) != {1} \
                    or m.padding_mode != "zeros":
                raise Unsupported(f"{where}: {type(m).__name__} with non-square, grouped, dilated or padded-mode "
                                  "settings")
            op = {"op": "conv2d" if isinstance(m, nn.Conv2d) else "conv_transpose2d", "w": self.tensor(m.weight),
                  "b": self.tensor(m.bias if m.bias is not None else torch.zeros(m.out_channels)),
                  "stride": int(s), "padding": int(p)}
            if isinstance(m, nn.ConvTranspose2d):
                op["output_padding"] = [int(v) for v in m.output_padding]
            self.ops.append(op)
        elif isinstance(m, nn.Upsample):
            factor = m.scale_factor
            factor = factor[0] if isinstance(factor, tuple) and len(set(factor)) == 1 else factor
            if m.mode != "nearest" or m.size is not None or not float(factor or 0).is_integer():
                raise Unsupported(f"{where}: Upsample other than nearest by a whole factor")
            self.ops.append({"op": "upsample", "factor": int(factor)})
        else:
            children = list(m.children())
            # A wrapper whose forward runs its one child (MLPDecoder.net, ConvDecoder.net). The server checks
            # the whole description against the model's decode, so a wrapper that does more is caught there.
            if len(children) == 1 and not list(m.parameters(recurse=False)) and not list(m.buffers(recurse=False)):
                self.add(children[0], f"{where}.{next(iter(dict(m.named_children())))}")
            else:
                raise Unsupported(f"{where}: {type(m).__name__} is not a layer the page knows")


def describe(decoder: nn.Module, output_ops: list[dict], latent_dim: int, output_shape) -> PageDecoder:
    """`decoder` (B, latent_dim) -> (B, *output_shape), then `output_ops` (the likelihood's mean), as a
    PageDecoder; raises Unsupported for a layer the page cannot run."""
    b = _Builder()
    b.add(decoder, "decoder")
    b.ops.extend(output_ops)
    return PageDecoder(int(latent_dim), tuple(int(s) for s in output_shape), b.ops, b.tensors)


# ---- the reference interpreter -------------------------------------------------------------------

def _conv2d(x, w, b, s, p):  # x (Cin, H, W), w (Cout, Cin, k, k) -> (Cout, Ho, Wo), as torch's Conv2d
    cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    xp = np.zeros((cin, h + 2 * p, wd + 2 * p), x.dtype)
    xp[:, p:p + h, p:p + wd] = x
    ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    y = np.empty((cout, ho, wo), np.float64)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * s:i * s + k, j * s:j * s + k]
            y[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return y + b[:, None, None]


def _conv_transpose2d(x, w, b, s, p, op):  # x (Cin, H, W), w (Cin, Cout, k, k), as torch's ConvTranspose2d
    cin, h, wd = x.shape
    _, cout, k, _ = w.shape
    full_h, full_w = (h - 1) * s + k + op[0], (wd - 1) * s + k + op[1]
    y = np.zeros((cout, full_h + 2 * p, full_w + 2 * p), np.float64)  # room for the cropped border
    for i in range(h):
        for j in range(wd):
            # every input pixel scatters its kernel, weighted per output channel: (Cout, k, k)
            y[:, i * s:i * s + k, j * s:j * s + k] += np.tensordot(x[:, i, j], w, axes=(0, 0))
    ho, wo = (h - 1) * s - 2 * p + k + op[0], (wd - 1) * s - 2 * p + k + op[1]
    return y[:, p:p + ho, p:p + wo] + b[:, None, None]


def run(desc: PageDecoder, z) -> np.ndarray:
    """Decode codes (B, latent_dim) with the description alone: (B, *output_shape), float64 arithmetic."""
    z = np.asarray(z, np.float64).reshape(-1, desc.latent_dim)
    out = []
    for code in z:
        x = code
        for op in desc.ops:
            t = {k: desc.tensors[v].astype(np.float64) for k, v in op.items() if isinstance(v, str) and k != "op"}
            kind = op["op"]
            if kind == "linear":
                x = t["w"] @ x.reshape(-1) + t["b"]
            elif kind == "relu":
                x = np.maximum(x, 0)
            elif kind == "leaky_relu":
                x = np.where(x >= 0, x, x * op["slope"])
            elif kind == "sigmoid":
                x = 1 / (1 + np.exp(-x))
            elif kind == "tanh":
                x = np.tanh(x)
            elif kind == "reshape":
                x = x.reshape(op["shape"])
            elif kind == "affine":
                shape = (-1,) + (1,) * (x.ndim - 1)
                x = x * t["scale"].reshape(shape) + t["shift"].reshape(shape)
            elif kind == "conv2d":
                x = _conv2d(x, t["w"], t["b"], op["stride"], op["padding"])
            elif kind == "conv_transpose2d":
                x = _conv_transpose2d(x, t["w"], t["b"], op["stride"], op["padding"], op["output_padding"])
            elif kind == "upsample":
                x = x.repeat(op["factor"], axis=-2).repeat(op["factor"], axis=-1)
            else:
                raise ValueError(f"unknown op {kind!r}")
        out.append(x.reshape(desc.output_shape))
    return np.stack(out)


def check(desc: PageDecoder, decode, n: int = 4, seed: int = 0, tolerance: float = 1e-4) -> float:
    """The largest difference between `run(desc, z)` and `decode(z)` over n random codes (and the zero
    code); raises Unsupported above `tolerance`: a description that does not say what decode does."""
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([torch.zeros(1, desc.latent_dim), 2 * torch.randn(n, desc.latent_dim, generator=g)])
    with torch.no_grad():
        want = decode(z).detach().float().cpu().numpy()
    got = run(desc, z.numpy())
    if got.shape != want.shape:
        raise Unsupported(f"the description gives {got.shape[1:]} items, decode gives {want.shape[1:]}")
    err = float(np.abs(got - want).max())
    if not math.isfinite(err) or err > tolerance:
        raise Unsupported(f"the description differs from decode by {err:.3g}")
    return err

"""One function per explorer action: plain values in (checkpoint names, indices,
slider values, file paths), plain values out (PIL images, plotly figures,
Markdown). app.py only lays these out and wires events to them; tests call them
directly. A `ViewError` carries a message meant for the user.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import figures
from .cards import model_card
from .catalog import Catalog, CatalogError, LoadedCheckpoint
from .data import to_float
from .explore import PCABaseline, interpolate, latent_plane, reconstruction_errors, sample_images, slider_axes
from .images import UploadError, image_grid, load_upload, to_pil
from .jobs import JobError, TrainingJobs, TrainSpec
from .metrics import psnr
from .models import VQVAE
from .noise import NOISE_KINDS, add_noise
from .projections import UmapProjector, pca_2d, raw_2d, resolve_projection

MAX_SLIDERS = 8
SAMPLE_GRID = 7  # 7×7


class ViewError(ValueError):
    """Bad input or an unusable model, explained for the person at the page."""


def display_scale(shape, target: int = 128) -> int:
    """Integer upscaling so an image of `shape` shows about `target` pixels high, pixels crisp."""
    return max(1, target // shape[-2])


@dataclass
class MapResult:
    figure: object  # plotly Figure
    note: str
    pending: bool  # a UMAP is being computed: ask again soon


class Explorer:
    """The explorer's state shared by all sessions: checkpoints, the UMAP worker, the training job.

    Everything per session (which model, which point) arrives as arguments, so
    one tab's choices never show up in another.
    """

    def __init__(self, checkpoint_dir: str | Path = "checkpoints", data_root: str | None = None,
                 projection_cache: str | Path | None = None):
        self.catalog = Catalog(checkpoint_dir, data_root)
        self.umap = UmapProjector(projection_cache if projection_cache is not None
                                  else Path(checkpoint_dir) / "projections")
        self.jobs = TrainingJobs(checkpoint_dir, data_root)
        self._baselines: dict[tuple, PCABaseline] = {}
        self._lock = threading.Lock()

    # ---- helpers ---------------------------------------------------------------------

    def load(self, name: str) -> LoadedCheckpoint:
        if not name:
            raise ViewError("choose a model first")
        try:
            return self.catalog.get(name)
        except CatalogError as e:
            raise ViewError(str(e)) from None

    def _test_images(self, entry: LoadedCheckpoint) -> torch.Tensor:
        try:
            return entry.data.test_x
        except CatalogError as e:
            raise ViewError(str(e)) from None

    def _index(self, entry: LoadedCheckpoint, index) -> int:
        n = len(self._test_images(entry))
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise ViewError(f"the image index must be a whole number from 0 to {n - 1}") from None
        if not 0 <= i < n or (isinstance(index, float) and not float(index).is_integer()):
            raise ViewError(f"image index {index} is out of range: {entry.dataset_name} has test images 0 to {n - 1}")
        return i

    def _upload(self, entry: LoadedCheckpoint, path) -> tuple[torch.Tensor, str]:
        """An uploaded file at the model's input shape, (1, C, H, W) float, and what was done to it."""
        try:
            x, note = load_upload(path, entry.input_shape)
        except UploadError as e:
            raise ViewError(str(e)) from None
        x = to_float(x[None])
        # Digit datasets are light strokes on black; a photo of ink on paper is the reverse.
        data_border = _border_mean(to_float(self._test_images(entry)[:200]))
        if data_border < 0.2 and _border_mean(x) > 0.5:
            x = 1.0 - x
            note += ", inverted (light background, unlike the training images)"
        return x, note

    def _image(self, entry, index, upload) -> tuple[torch.Tensor, str]:
        if upload:
            return self._upload(entry, upload)
        i = self._index(entry, index)
        x = to_float(self._test_images(entry)[i:i + 1])
        return x, f"test image {i} (label {_label(entry, i)})"

    def checkpoint_names(self) -> list[str]:
        return self.catalog.names()

    def card(self, name: str) -> str:
        entry = self.load(name)
        return model_card(entry.name, entry.model, entry.meta)

    # ---- 1. latent map ----------------------------------------------------------------

    def latent_map(self, name: str, projection: str = "auto", selected: int | None = None) -> MapResult:
        entry = self.load(name)
        codes = entry.codes
        try:
            method = resolve_projection(projection, entry.model.latent_dim)
        except ValueError as e:
            raise ViewError(str(e)) from None
        note = ""
        if projection == "raw" and method == "pca":
            note = f"{entry.model.latent_dim}-D codes have no raw plane: PCA shown. "
        pending = False
        if method == "umap":
            emb = self.umap.get(entry.key, codes)
            if emb is None:
                error = self.umap.error(entry.key)
                note += (f"UMAP failed ({error}); PCA shown. " if error else
                         "UMAP is being computed in the background (the first fit after start compiles for a "
                         "while); PCA is shown meanwhile and the map switches by itself. ")
                pending = error is None
                method = "pca"
            else:
                points, axis_names = emb, ("UMAP 1", "UMAP 2")
        if method == "raw":
            points, axis_names = raw_2d(codes), ("z[0]", "z[1]" if codes.shape[1] > 1 else "")
        elif method == "pca":
            axes = entry.axes
            points = pca_2d(codes, axes.mean, axes.directions)
            share = axes.explained()
            axis_names = tuple(f"PC {i + 1} ({100 * share[i]:.0f}%)" if i < len(share) else "" for i in range(2))
        title = f"{entry.name}: {entry.model.name}, {entry.model.latent_dim}-D, {method.upper()}"
        sel = None if selected is None or selected == "" else int(selected)
        fig = figures.latent_map(points, entry.labels, entry.data.classes, title, axis_names, sel)
        note += f"{len(codes):,} test images of {entry.dataset_name}; click a point or type its index."
        return MapResult(fig, note, pending)

    def compare_point(self, left: str, right: str, index) -> tuple[Image.Image, Image.Image, Image.Image, str]:
        """A test image and both models' reconstructions of it."""
        a, b = self.load(left), self.load(right)
        i = self._index(a, index)
        x = to_float(self._test_images(a)[i:i + 1])
        ra = a.reconstruct(x)
        if b.input_shape != a.input_shape or b.dataset_name != a.dataset_name:
            raise ViewError(f"{left} and {right} were trained on different data ({a.dataset_name} "
                            f"{a.input_shape} vs {b.dataset_name} {b.input_shape}); compare models of one dataset")
        rb = b.reconstruct(x)
        s = display_scale(a.input_shape)
        err_a, err_b = float((ra - x).square().mean()), float((rb - x).square().mean())
        caption = (f"Test image **{i}** (label {_label(a, i)}). Reconstruction error (MSE per pixel): "
                   f"{left} **{err_a:.4f}**, {right} **{err_b:.4f}**.")
        return to_pil(x[0], s), to_pil(ra[0], s), to_pil(rb[0], s), caption

    def manifold(self, name: str, n: int = 15) -> tuple[Image.Image, str]:
        entry = self.load(name)
        n = int(max(3, min(int(n), 30)))
        z, xs, ys = latent_plane(entry.codes, entry.axes, n)
        images = entry.decode(z)
        grid = image_grid(images, nrow=n, padding=1, scale=display_scale(entry.input_shape, 48))
        d = entry.model.latent_dim
        if d <= 2:
            what = (f"the latent plane, z[0] from {xs[0]:.2f} to {xs[-1]:.2f} (left to right), z[1] from "
                    f"{ys[-1]:.2f} to {ys[0]:.2f} (top to bottom), over the box holding 98% of the test codes")
        else:
            what = ("the plane of the top two principal directions of the test codes through their mean, "
                    "±2.5 standard deviations (PC 1 left to right, PC 2 bottom to top)")
        return grid, f"**{name}** decodes {n}×{n} points of {what}."

    # ---- 2. reconstruct ----------------------------------------------------------------

    def reconstruct(self, names: list[str], indices: str = "", upload=None, seed: int = 0,
                    count: int = 8) -> tuple[Image.Image, str]:
        """Rows: the inputs, then each model's reconstructions; plus a table of per-image errors."""
        names = [n for n in (names or []) if n]
        if not names:
            raise ViewError("choose at least one model")
        entries = [self.load(n) for n in names]
        first = entries[0]
        for e in entries[1:]:
            if e.input_shape != first.input_shape:
                raise ViewError(f"{e.name} takes {e.input_shape} images but {first.name} takes "
                                f"{first.input_shape}: choose models of one input shape")
        if upload:
            x, note = self._upload(first, upload)
            labels = ["upload"]
        else:
            n = len(self._test_images(first))
            picked = _parse_indices(indices, n) if str(indices or "").strip() else \
                np.random.default_rng(int(seed)).choice(n, size=min(int(count), n), replace=False).tolist()
            x = to_float(self._test_images(first)[picked])
            note = f"test images {', '.join(map(str, picked))} of {first.dataset_name}"
            labels = [str(i) for i in picked]
        rows, table = [x], ["| model | " + " | ".join(labels) + " | mean |", "|---" * (len(labels) + 2) + "|"]
        for e in entries:
            r = e.reconstruct(x)
            rows.append(r)
            err = (r - x).square().flatten(1).mean(1)
            table.append(f"| {e.name} | " + " | ".join(f"{v:.4f}" for v in err.tolist()) + f" | {err.mean():.4f} |")
        grid = image_grid(torch.cat(rows), nrow=len(x), padding=1, scale=display_scale(first.input_shape, 64))
        text = (f"Top row: {note}. Below, one row per model: {', '.join(names)}.\n\n"
                "Reconstruction error, MSE per pixel:\n\n" + "\n".join(table))
        return grid, text

    def anomalies(self, name: str, percentile: float = 95.0, worst: int = 16) -> tuple[object, Image.Image, str]:
        """Histogram of reconstruction errors over the test set, a threshold, the worst images."""
        entry = self.load(name)
        if not 0 <= float(percentile) <= 100:
            raise ViewError("the threshold percentile must be between 0 and 100")
        errors = entry._cached("errors", lambda: reconstruction_errors(entry.model, self._test_images(entry)))
        threshold = float(np.percentile(errors, percentile))
        order = np.argsort(-errors)[: int(worst)]
        x = to_float(self._test_images(entry)[torch.as_tensor(order)])
        grid = image_grid(torch.cat([x, entry.reconstruct(x)]), nrow=len(order), padding=1,
                          scale=display_scale(entry.input_shape, 48))
        fig = figures.error_histogram(errors, threshold, f"{name}: reconstruction error on {len(errors):,} test images")
        above = int((errors > threshold).sum())
        text = (f"Threshold at the {percentile:g}th percentile: **{threshold:.4f}**; {above} images above it would "
                f"be flagged as anomalies. The {len(order)} worst (top: input, bottom: reconstruction): "
                + ", ".join(f"#{i} (label {_label(entry, i)}, {errors[i]:.3f})" for i in order) + ".")
        return fig, grid, text

    # ---- 3. latent sliders -------------------------------------------------------------

    def slider_setup(self, name: str, index) -> tuple[list[dict], Image.Image, str]:
        """The sliders for a model, set to the code of test image `index`: [{label, minimum, maximum, value}]."""
        entry = self.load(name)
        i = self._index(entry, index)
        axes = entry._cached("sliders", lambda: slider_axes(entry.codes, entry.axes, MAX_SLIDERS))
        values = axes.values(entry.codes[i])
        sliders = []
        for label, lo, hi, v in zip(axes.labels, axes.low, axes.high, values):
            lo, hi = float(min(lo, v)), float(max(hi, v))
            if hi - lo < 1e-6:  # a dead dimension: give the slider some room anyway
                lo, hi = lo - 1.0, hi + 1.0
            sliders.append({"label": label, "minimum": round(lo, 3), "maximum": round(hi, 3), "value": round(float(v), 3)})
        d = entry.model.latent_dim
        what = (f"one slider per latent coordinate ({d}-D code)" if d <= MAX_SLIDERS else
                f"the top {MAX_SLIDERS} principal directions of the {d}-D codes; the other directions keep image {i}'s values")
        extra = " VQ codes are decoded as moved, without snapping to the codebook." if isinstance(entry.model, VQVAE) else ""
        text = (f"Starting from test image {i} (label {_label(entry, i)}): {what}. Ranges span ±3 standard "
                f"deviations of the test codes.{extra}")
        return sliders, self.decode_sliders(name, i, [s["value"] for s in sliders]), text

    def decode_sliders(self, name: str, index, values: list[float]) -> Image.Image:
        """The hot path of the page: slider values -> decoded image."""
        entry = self.load(name)
        i = self._index(entry, index)
        axes = entry._cached("sliders", lambda: slider_axes(entry.codes, entry.axes, MAX_SLIDERS))
        vals = np.asarray([float(v) if v is not None else 0.0 for v in values][: len(axes.labels)], np.float32)
        if len(vals) < len(axes.labels) or not np.isfinite(vals).all():
            raise ViewError(f"{name} needs {len(axes.labels)} finite slider values")
        z = axes.compose(entry.codes[i], vals)
        return to_pil(entry.decode(z[None])[0], display_scale(entry.input_shape, 192))

    # ---- 4. interpolate ----------------------------------------------------------------

    def _endpoints(self, entry, index_a, index_b, upload_a, upload_b):
        """The two images (2, C, H, W) at the model's input shape, and their codes (2, D)."""
        xa, _ = self._image(entry, index_a, upload_a)
        xb, _ = self._image(entry, index_b, upload_b)
        x = torch.cat([xa, xb])
        return x, entry.encode(x).numpy()

    def interpolation_strip(self, names: list[str], index_a, index_b, upload_a=None, upload_b=None,
                            mode: str = "linear", steps: int = 10) -> tuple[Image.Image, str]:
        """For each model, a row: image A, the decodes of z(t) for N steps of t in [0, 1], image B."""
        steps = int(steps)
        if not 2 <= steps <= 30:
            raise ViewError("the number of steps must be between 2 and 30")
        names = [n for n in names if n]
        if not names:
            raise ViewError("choose at least one model")
        rows, shape = [], None
        for name in names:
            entry = self.load(name)
            if shape is not None and entry.input_shape != shape:
                raise ViewError(f"{name} takes {entry.input_shape} images, unlike the other model")
            shape = entry.input_shape
            x, (za, zb) = self._endpoints(entry, index_a, index_b, upload_a, upload_b)
            try:
                path = interpolate(za, zb, np.linspace(0, 1, steps), mode)
            except ValueError as e:
                raise ViewError(str(e)) from None
            rows.append(torch.cat([x[:1], entry.decode(path), x[1:]]))
        grid = image_grid(torch.cat(rows), nrow=steps + 2, padding=2, scale=display_scale(shape, 64))
        text = (f"{mode.capitalize()} interpolation in {steps} steps, one row per model ({', '.join(names)}): "
                "the input A, then decodes of z(t) from t = 0 to 1, then the input B. A VAE's path stays "
                "on images; an AE's often passes through blurs and non-digits.")
        return grid, text

    def interpolate_at(self, name: str, index_a, index_b, t: float, mode: str = "linear",
                       upload_a=None, upload_b=None) -> Image.Image:
        entry = self.load(name)
        _, (za, zb) = self._endpoints(entry, index_a, index_b, upload_a, upload_b)
        t = float(t)
        if not 0 <= t <= 1:
            raise ViewError("t must be between 0 and 1")
        try:
            z = interpolate(za, zb, [t], mode)
        except ValueError as e:
            raise ViewError(str(e)) from None
        return to_pil(entry.decode(z)[0], display_scale(entry.input_shape, 160))

    # ---- 5. sample -----------------------------------------------------------------------

    def sample(self, name: str, temperature: float = 1.0, seed: int = 0) -> tuple[Image.Image, Image.Image, str]:
        """Two 7×7 grids and what they show: prior vs fitted Gaussian, or VQ usage vs uniform codes."""
        entry = self.load(name)
        model = entry.model
        if not float(temperature) > 0:
            raise ViewError("temperature must be positive")
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise ViewError("the seed must be a whole number") from None
        n, s = SAMPLE_GRID * SAMPLE_GRID, display_scale(entry.input_shape, 40)
        if isinstance(model, VQVAE):
            a = sample_images(model, n, "usage", temperature, seed)
            b = sample_images(model, n, "uniform", temperature, seed)
            text = ("**Left:** each code token drawn independently by how often training images used it "
                    "(temperature flattens or sharpens those frequencies). **Right:** tokens drawn uniformly "
                    "from the codebook. A VQ-VAE has no learned prior over token combinations (the original "
                    "uses a PixelCNN for that), so neither is a true sample of the data.")
        else:
            a = sample_images(model, n, "prior", temperature, seed)
            b = sample_images(model, n, "fitted", temperature, seed, codes=entry.codes)
            if model.can_sample:
                text = ("**Left:** z ~ N(0, T²·I), the VAE's prior: its decodes are its generative samples. "
                        "**Right:** z from a Gaussian fitted to the test codes, for comparison; a well-trained "
                        "VAE's codes already look like N(0, I), so both should look alike.")
            else:
                text = ("**Left:** z ~ N(0, T²·I). A plain autoencoder was never asked to put its codes there, "
                        "so most of these decode to blurs or nothing: this is why AE sampling fails. **Right:** "
                        "z from a Gaussian fitted to the AE's own codes: closer, yet the codes fill an irregular "
                        "shape, and the gaps between classes still decode to non-images. A VAE fixes this by "
                        "training the codes towards N(0, I).")
        return image_grid(a, SAMPLE_GRID, scale=s), image_grid(b, SAMPLE_GRID, scale=s), text

    # ---- 6. denoise ----------------------------------------------------------------------

    def _pca_baseline(self, entry: LoadedCheckpoint, k: int) -> PCABaseline:
        key = (entry.dataset_name, entry.input_shape, k)
        with self._lock:
            if key not in self._baselines:
                self._baselines[key] = PCABaseline(entry.data.train_x, k)
            return self._baselines[key]

    def denoise(self, names: list[str], index=0, upload=None, kind: str = "gaussian", level: float = 0.5,
                seed: int = 0) -> tuple[Image.Image, Image.Image, list[tuple[Image.Image, str]], str]:
        """Clean image, its noisy version, and each model's (plus PCA's) output with its PSNR."""
        names = [n for n in (names or []) if n]
        if not names:
            raise ViewError("choose at least one model")
        if kind not in NOISE_KINDS:
            raise ViewError(f"noise must be one of {', '.join(NOISE_KINDS)}")
        level = float(level)
        if not 0 <= level <= (3 if kind == "gaussian" else 1):
            raise ViewError(f"{kind} noise level must be between 0 and {3 if kind == 'gaussian' else 1}")
        entries = [self.load(n) for n in names]
        first = entries[0]
        clean, note = self._image(first, index, upload)
        noisy = add_noise(clean, kind, level, torch.Generator().manual_seed(int(seed)))
        s = display_scale(first.input_shape, 128)
        outputs = []
        for e in entries:
            if e.input_shape != first.input_shape:
                outputs.append((to_pil(torch.full(first.input_shape, 0.5), s),
                                f"{e.name}: skipped, it takes {e.input_shape} images"))
                continue
            out = e.reconstruct(noisy)
            outputs.append((to_pil(out[0], s), f"{e.name}: {float(psnr(out, clean)):.1f} dB"))
        k = min(entries[0].model.latent_dim, int(np.prod(first.input_shape)))
        pca = self._pca_baseline(first, k).reconstruct(noisy)
        outputs.append((to_pil(pca[0], s), f"PCA, {k} components: {float(psnr(pca, clean)):.1f} dB"))
        text = (f"Input: {note}. Noisy: {kind} at {level:g}, **{float(psnr(noisy, clean)):.1f} dB** against the "
                f"clean image. Each output's PSNR is against the clean image (higher is better). PCA keeps as "
                f"many components as {first.name}'s code has dimensions, fitted on {first.dataset_name}'s training set.")
        return to_pil(clean[0], s), to_pil(noisy[0], s), outputs, text

    # ---- 7. train ------------------------------------------------------------------------

    def train_start(self, **settings) -> str:
        try:
            job = self.jobs.start(TrainSpec(**settings))
        except JobError as e:
            raise ViewError(str(e)) from None
        except TypeError as e:
            raise ViewError(f"bad training settings: {e}") from None
        return f"Started **{job.spec.name}**: {job.spec.model} on {job.spec.dataset}, {job.spec.epochs} epochs."

    def train_cancel(self) -> str:
        job = self.jobs.cancel()
        if job is None:
            return "No training has been started."
        return f"**{job.spec.name}**: {job.message or job.status}"

    def train_version(self) -> tuple:
        """Changes whenever the training job has something new to show (cheap: for polling)."""
        job = self.jobs.current
        return () if job is None else (job.started, job.version, job.status)

    def train_status(self) -> tuple[str, object, Image.Image | None, bool]:
        """(progress Markdown, loss-curve figure, reconstruction history, still running)."""
        job = self.jobs.current
        if job is None:
            return "No training yet. Choose settings and press **Start training**.", figures.loss_curves([], []), None, False
        snap = job.snapshot()
        p, spec = snap["progress"], snap["spec"]
        lines = [f"**{snap['name']}**: {spec['model']} on {spec['dataset']}, latent {spec['latent_dim']}; "
                 f"status **{snap['status']}**" + (f" on **{snap['device']}**" if snap["device"] else "")]
        if p:
            eta = snap["eta"]
            lines.append(f"epoch {p['epoch']}/{p['epochs']}, step {p['step']}/{p['steps_per_epoch']}, "
                         f"{p['images_per_s']:,.0f} images/s, {p['elapsed']:.1f} s elapsed"
                         + (f", about {eta:.0f} s left" if eta is not None and snap["status"] == "running" else ""))
        elif snap["status"] == "starting":
            lines.append("starting the training process (loading torch and the data)…")
        if snap["epochs"]:
            last = snap["epochs"][-1]["test"]
            lines.append("last test metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                                                           if isinstance(v, float)))
        if snap["message"]:
            lines.append(snap["message"])
        if snap["status"] == "finished":
            lines.append(f"Saved as checkpoint **{snap['name']}**: it is in every model picker now.")
        fig = figures.loss_curves(snap["steps"], snap["epochs"])
        history = None
        if snap["fixed"] is not None and len(snap["fixed"]):
            rows = [snap["fixed"]] + snap["recons"][-7:]  # the inputs, then the last epochs' reconstructions
            x = torch.as_tensor(np.concatenate(rows)).float() / 255.0
            history = image_grid(x, nrow=len(snap["fixed"]), padding=1, scale=display_scale(x.shape[1:], 40))
        return "  \n".join(lines), fig, history, job.running


def _label(entry: LoadedCheckpoint, i: int) -> str:
    y = int(entry.data.test_y[i])
    classes = entry.data.classes
    return classes[y] if 0 <= y < len(classes) else "none"


def _border_mean(x: torch.Tensor) -> float:
    """Mean brightness of the outermost pixel ring of (B, C, H, W) images."""
    border = torch.cat([x[..., 0, :].flatten(), x[..., -1, :].flatten(), x[..., :, 0].flatten(), x[..., :, -1].flatten()])
    return float(border.mean())


def _parse_indices(text: str, n: int) -> list[int]:
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            if not (lo.strip().isdigit() and hi.strip().isdigit()):
                raise ViewError(f"{part!r} is not a range of indices like 3-7")
            out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ViewError(f"{part!r} is not an image index; write indices like 0, 5, 10-13")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ViewError(f"indices {bad[:5]} are out of range: the test set has images 0 to {n - 1}")
    if not out:
        raise ViewError("no indices given")
    if len(out) > 32:
        raise ViewError("at most 32 images at once")
    return out

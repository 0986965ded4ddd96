"""The explorer's actions, one method each: plain values in (checkpoint names,
indices, slider values, file paths), plain values out (PIL images, plotly
figures, Markdown). app.py lays these out and wires events to them; tests call
them directly. A `ViewError` carries a message meant for the user.

Every action asks the model (its sample sources, code kind, extra metrics) and
the data kind (how to show, corrupt and read items); none checks a type.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import export, figures
from ..codebook import code_images, codebook_usage, level_errors, top_items
from ..cards import model_card
from ..checkpoints import CheckpointError, load_motion
from ..data import DATASETS
from ..data.downloads import DOWNLOADABLE, is_present
from ..data.image_sets import expected_files
from ..data.images import png_data_url
from ..attributes import AttributeVector, apply_attribute, attribute_vector, projections
from ..anomaly import THRESHOLD_RULES, choose_threshold, curves, detection_report
from ..data.dataset import UploadError
from ..disentanglement import COLLAPSED_STD, EXPLAINS_NOTHING, scorecard
from ..latent import (ACTIVE_VARIANCE, PROJECTIONS, PCABaseline, code_moments, decoder_inputs, interpolate, latent_plane,
                      latent_usage, map_ellipse, map_frame, pca_2d, prior_gap, raw_2d, reconstruction_errors,
                      resolve_projection, slider_axes, traversals)
from ..subspaces import compare_with_pca
from ..models import MODELS, model_entry
from ..motion import MotionRecord
from ..runs import DataSpec, RunError, RunSpec, parse_settings, split_settings
from ..training import TrainConfig
from .catalog import DEFAULT_LOADED_MODELS, Catalog, CatalogError, DatasetMissing, LoadedCheckpoint
from .dataset_downloads import DatasetDownloads
from .errors import ViewError
from .jobs import TABLES_FOLDER, JobError, TrainingJobs
from .hover_tiles import HoverTiles, TileSheet
from .page_decoders import PageDecoders, PageExport
from .umap_worker import UmapProjector

MAX_SLIDERS = 8
MAX_TABLE_UPLOAD = 10 * 1024 * 1024  # the page's upload limit (app.py's max_file_size)
MAX_DRAWING_CHARS = 4 * MAX_TABLE_UPLOAD // 3 + 4  # a drawing's data URL: the same 10 MB, in base64
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
SAMPLE_GRID = 7  # 7×7
MAX_TRAVERSALS = 16  # rows of latent traversals: the most used dimensions first
TRAVERSAL_STEPS = np.linspace(-3, 3, 9)
SLIDER_IMAGE, INTERPOLATION_IMAGE = 192, 160  # pixels high: the decoded item in those views
PAGE_DECODERS = "page_decoders"  # in the checkpoints folder: the decoders written for pages
HOVER_TILES = "hover_tiles"  # in the checkpoints folder: the sprite sheets of the maps' hover
PCA_EXAMPLES = 8  # test items reconstructed by a linear AE and by PCA, side by side
EXPORT_KEEP_S = 600  # an export's own copy of its files: Gradio has copied them into its cache long before
CODE_USERS = 8  # test items shown for a chosen code: those whose tokens use it most
LEVEL_EXAMPLES = 6  # test items shown after each residual VQ level
DRAWN_IMAGE = 112  # pixels high: the drawing as a model sees it, and its reconstruction
RESAMPLES = 8  # decodes of z ~ q(z|x) for a drawing


@dataclass
class Resampled:
    """Decodes of samples z ~ q(z|x) for one drawing: the items (k, ...) and their picture, or None for a model
    without a posterior, whose caption says why."""

    items: torch.Tensor | None
    picture: Image.Image | None
    caption: str




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
                 projection_cache: str | Path | None = None, train_memory_limit: float | None = None,
                 page_cache: str | Path | None = None, train_lock: str | Path | None = None,
                 loaded_models: int = DEFAULT_LOADED_MODELS):
        self.catalog = Catalog(checkpoint_dir, data_root, capacity=loaded_models)
        # Served to pages as static files (app.py): nothing else of the checkpoints folder is.
        self.pages = PageDecoders(page_cache if page_cache is not None else self.catalog.root / PAGE_DECODERS)
        self.tiles = HoverTiles(self.catalog.root / HOVER_TILES)  # served as static files too
        self.umap = UmapProjector(projection_cache if projection_cache is not None
                                  else Path(checkpoint_dir) / "projections")
        self.jobs = TrainingJobs(checkpoint_dir, data_root, memory_limit=train_memory_limit, lock_file=train_lock)
        self.downloads = DatasetDownloads(data_root)
        self._baselines: dict[tuple, PCABaseline] = {}
        self._exports = Path(tempfile.mkdtemp(prefix="vae_explorer_exports-"))  # the page's downloads
        self._lock = threading.Lock()

    # ---- helpers ---------------------------------------------------------------------

    def load(self, name: str) -> LoadedCheckpoint:
        if not name:
            raise ViewError("choose a model first")
        try:
            return self.catalog.get(name)
        except CatalogError as e:
            raise ViewError(str(e)) from None

    def _data(self, entry: LoadedCheckpoint):
        try:
            return entry.data
        except CatalogError as e:
            raise ViewError(str(e)) from None

    def _missing(self, entry: LoadedCheckpoint):
        """The DataNotFound of a checkpoint whose dataset is not in the data folder; None when it is there."""
        try:
            entry.data
        except DatasetMissing as e:
            return e.missing
        except CatalogError:
            return None  # another problem: the view that needs the data says it
        return None

    def _index(self, entry: LoadedCheckpoint, index) -> int:
        n = len(self._data(entry).test_x)
        try:
            i = int(index)
        except (TypeError, ValueError, OverflowError):
            raise ViewError(f"the item index must be a whole number from 0 to {n - 1}") from None
        if not 0 <= i < n or (isinstance(index, float) and not float(index).is_integer()):
            raise ViewError(f"index {index} is out of range: {entry.dataset_name} has test items 0 to {n - 1}")
        return i

    def _test_items(self, entry: LoadedCheckpoint, picked) -> torch.Tensor:
        """Test items by index, prepared for the model: (B, ...)."""
        data = self._data(entry)
        return data.kind.prepare(data.test_x[torch.as_tensor(picked)])

    def _upload(self, entry: LoadedCheckpoint, path) -> tuple[torch.Tensor, str]:
        """An uploaded file as the model's input, (1, ...), and what was done to it."""
        reference = self._test_items(entry, list(range(min(200, len(self._data(entry).test_x)))))
        try:
            return entry.kind.read_upload(path, entry.input_shape, reference)
        except UploadError as e:
            raise ViewError(str(e)) from None

    def _item(self, entry, index, upload) -> tuple[torch.Tensor, str]:
        if upload:
            return self._upload(entry, upload)
        i = self._index(entry, index)
        return self._test_items(entry, [i]), f"test {entry.kind.item} {i} (label {self._data(entry).label(i)})"

    def shown_as(self, name: str) -> str:
        """How the model's items are shown: "image" or "table" (the page picks its components by this)."""
        return self.load(name).kind.shown_as

    def _scores(self, entry: LoadedCheckpoint) -> np.ndarray:
        """Anomaly scores of the test items: the reconstruction error in the kind's units, computed once."""
        return entry.cached("errors", lambda: reconstruction_errors(entry.model, self._data(entry).test_x, entry.kind))

    def noise_kinds(self, name: str) -> list[str]:
        """The corruptions the model's kind of data knows (images: noise; tables: missing or random cells)."""
        return list(self.load(name).kind.noise_kinds)

    def columns(self, name: str) -> list[str]:
        """The columns of a table model's data (empty for images): the cells imputation may corrupt."""
        data = self._data(self.load(name))
        return list(data.kind.attributes(data.test_x))

    def map_colourings(self, name: str) -> list[str]:
        """What the map's points can be coloured by: the label, the anomaly score, and the data's attributes
        (known factors, a table's columns)."""
        return ["label", "anomaly score", *self._data(self.load(name)).attributes()]

    def checkpoint_names(self) -> list[str]:
        return self.catalog.names()

    def catalog_version(self) -> tuple:
        """Changes when checkpoints appear, vanish or are rewritten: cheap to poll."""
        return self.catalog.version()

    def test_size(self, name: str) -> int:
        return len(self._data(self.load(name)).test_x)

    def card(self, name: str) -> str:
        entry = self.load(name)
        return model_card(entry.name, entry.model, entry.meta, MODELS.get(entry.model.name))

    def warm_up(self) -> None:
        """Compile UMAP in its worker now, so the first UMAP map is quick (a minute of CPU here)."""
        self.umap.warm_up()

    def close(self) -> None:
        """Stop the training and UMAP processes."""
        self.jobs.close()
        self.umap.close()
        shutil.rmtree(self._exports, ignore_errors=True)

    # ---- 1. latent map ----------------------------------------------------------------

    def latent_map(self, name: str, projection: str = "auto", selected: int | None = None,
                   colour: str | None = "label") -> MapResult:
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
            points = pca_2d(codes, axes)
            share = axes.explained()
            axis_names = tuple(f"PC {i + 1} ({100 * share[i]:.0f}%)" if i < len(share) else "" for i in range(2))
        title = f"{entry.name}: {entry.model.name}, {entry.model.latent_dim}-D, {method.upper()}"
        sel = None if selected is None or selected == "" else int(selected)
        labels, classes, values = entry.labels, self._data(entry).classes, None
        colour = colour or "label"
        if colour == "anomaly score":
            values = self._scores(entry)
        elif colour != "label":
            attributes = self._data(entry).attributes()
            if colour not in attributes:
                raise ViewError(f"{entry.name}'s map can be coloured by: {', '.join(self.map_colourings(name))}; "
                                f"not {colour!r}")
            column, names = attributes[colour]
            labels, classes, values = (column, names, None) if names is not None else (labels, classes, column)
        fig = figures.latent_map(points, labels, classes, title, axis_names, sel, values=values,
                                 value_name=None if values is None else colour)
        tiles = self.hover_tiles(name)
        # For the page's touch script (map_touch.js): which map this is (a click decodes on it), and where
        # each point's picture lies in the sprite sheet (the app turns the file into a URL).
        # Also how the page decodes at the marker itself while it is dragged (map_page: a decoder and the plane).
        fig.update_layout(meta={"map": {"model": entry.name, "projection": method, "page": self.map_page(name, method)},
                                "tiles": None if tiles is None else tiles.as_meta(str(tiles.file))})
        note += f"{len(codes):,} test {entry.kind.item}s of {entry.dataset_name}; click a point or type its index."
        if tiles is not None:
            note = note[:-1] + ", hover one to see it; click empty space to decode there (drag the marker)."
        else:
            note = note[:-1] + "; click empty space to decode there (drag the marker)."
        return MapResult(fig, note, pending)

    def hover_tiles(self, name: str) -> TileSheet | None:
        """The sprite sheet of `name`'s test items (tile i = test item i, the map's customdata i), written once
        per dataset contents; None for data not shown as pictures."""
        entry = self.load(name)
        data = self._data(entry)
        return entry.cached("hover_tiles", lambda: self.tiles.sheet(data.test_x, data.kind, f"{entry.dataset_name}-test"))

    def compare_point(self, left: str, right: str, index) -> tuple[Image.Image, Image.Image, Image.Image, str]:
        """A test item and both models' reconstructions of it."""
        a, b = self.load(left), self.load(right)
        i = self._index(a, index)
        if b.input_shape != a.input_shape or b.dataset_name != a.dataset_name:
            raise ViewError(f"{left} and {right} were trained on different data ({a.dataset_name} "
                            f"{a.input_shape} vs {b.dataset_name} {b.input_shape}); compare models of one dataset")
        x = self._test_items(a, [i])
        ra, rb = a.reconstruct(x), b.reconstruct(x)
        kind = a.kind
        err_a, err_b = float(kind.errors(ra, x)[0]), float(kind.errors(rb, x)[0])
        caption = (f"Test {kind.item} **{i}** (label {self._data(a).label(i)}). Reconstruction error "
                   f"({kind.error_name}): {left} **{err_a:.4f}**, {right} **{err_b:.4f}**.")
        details = [(n, kind.explain(r, x)) for n, r in ((left, ra), (right, rb))]
        if any(text for _, text in details):
            caption += " Largest per-column errors: " + "; ".join(f"{n}: {text}" for n, text in details) + "."
        if kind.shown_as == "table":  # one table: the row, then each model's reconstruction of it
            both = kind.grid(kind.concat([x, ra, rb]), labels=[f"row {i}", f"{left}", f"{right}"])
            return both, None, None, caption
        return kind.show(x[0]), kind.show(ra[0]), kind.show(rb[0]), caption

    def manifold(self, name: str, n: int = 15) -> tuple[Image.Image, str]:
        entry = self.load(name)
        n = int(max(3, min(_number(n, "the grid size"), 30)))
        z, xs, ys = latent_plane(entry.codes, entry.axes, n)
        grid = entry.kind.grid(entry.decode(z), nrow=n, target=48)
        d = entry.model.latent_dim
        if d <= 2:
            what = (f"the latent plane, z[0] from {xs[0]:.2f} to {xs[-1]:.2f} (left to right), z[1] from "
                    f"{ys[-1]:.2f} to {ys[0]:.2f} (top to bottom), over the box holding 98% of the test codes")
        else:
            what = ("the plane of the top two principal directions of the test codes through their mean, "
                    "±2.5 standard deviations (PC 1 left to right, PC 2 bottom to top)")
        return grid, f"**{name}** decodes {n}×{n} points of {what}."

    def map_point_code(self, name: str, projection, x, y) -> tuple[np.ndarray, str, str]:
        """The code at map position (x, y) of `name`'s map in `projection`: ((D,) code, the projection used,
        how it was found). Exact on the raw plane of a 2-D code; on the PCA plane the point on the plane of
        the top two principal directions through the codes' mean (the other coordinates at the mean: PCA's
        inverse_transform); on a UMAP map umap-learn's inverse_transform, flagged outside the codes' hull."""
        entry = self.load(name)
        x, y = (v.item() if isinstance(v, np.generic) else v for v in (x, y))  # numpy scalars from callers
        x, y = number_input(x, "the map's x coordinate"), number_input(y, "the map's y coordinate")
        if projection not in PROJECTIONS:
            raise ViewError(f"the projection must be one of {', '.join(PROJECTIONS)}, got {_shown(projection)}")
        d = entry.model.latent_dim
        method = resolve_projection(projection, d)
        if method == "raw":  # ('raw' for wider codes resolves to PCA, as their map shows)
            if d == 1:
                return np.array([x], np.float32), method, ("exact: the map's x is the 1-D code (y is not part "
                                                           "of the code)")
            return np.array([x, y], np.float32), method, "exact: the map's plane is the code itself"
        if method == "pca":
            axes = entry.axes
            z = axes.mean + x * axes.directions[0] + (y * axes.directions[1] if d > 1 else 0)
            how = ("exact: the PCA plane of 2-D codes is a rotation of the code" if d <= 2 else
                   f"back-projected through the top two principal axes, the other {d - 2} coordinates at the "
                   "mean of the test codes")
            return z.astype(np.float32), method, how
        embedding = self.umap.get(entry.key, entry.codes)
        if embedding is None:
            raise ViewError(f"{name}'s UMAP map is still being computed (its map shows PCA meanwhile): decode on "
                            "the PCA map, or wait for the UMAP map")
        try:
            z = self.umap.inverse(entry.key, entry.codes, embedding, [[x, y]])[0]
        except Exception as e:  # the worker failed: the page says so and the server keeps serving
            raise ViewError(f"UMAP's inverse_transform failed ({type(e).__name__}: {e})") from None
        hull = entry.cached("umap_hull", lambda: _delaunay(embedding))
        inside = bool(hull.find_simplex(np.array([[x, y]])) >= 0)
        how = ("by umap-learn's inverse_transform (an approximation: interpolated from nearby test codes)" if inside
               else "by umap-learn's inverse_transform, **unreliable here: outside the convex hull of the test "
                    "codes' map**, where inverse_transform can only extrapolate")
        return z.astype(np.float32), method, how

    def decode_at(self, name: str, projection, x, y):
        """Decode the point (x, y) of `name`'s latent map in `projection` (map_point_code): (the decoded item:
        an image, or a one-row table for table models; a caption saying how the code was found)."""
        entry = self.load(name)
        z, method, how = self.map_point_code(name, projection, x, y)
        decoded = entry.decode(z[None])
        kind = entry.kind
        shown = (f"z = ({', '.join(f'{v:.3f}' for v in z)})" if len(z) <= 8 else
                 f"a {len(z)}-D code")
        caption = f"**{name}** decoded at ({float(x):.3f}, {float(y):.3f}) of its {method.upper()} map: {shown}, {how}."
        if kind.shown_as == "table":
            return kind.grid(decoded, labels=["decoded"]), caption
        return kind.show(decoded[0], target=SLIDER_IMAGE), caption

    # ---- 2. reconstruct ----------------------------------------------------------------

    def _same_inputs(self, names: list[str]) -> list[LoadedCheckpoint]:
        names = [n for n in (names or []) if n]
        if not names:
            raise ViewError("choose at least one model")
        entries = [self.load(n) for n in names]
        for e in entries[1:]:
            if e.input_shape != entries[0].input_shape or \
                    e.meta.get("config", {}).get("schema") != entries[0].meta.get("config", {}).get("schema"):
                raise ViewError(f"{e.name} takes {e.input_shape} {e.kind.item}s but {entries[0].name} takes "
                                f"{entries[0].input_shape}: choose models of one input shape")
        return entries

    def reconstruct(self, names: list[str], indices: str = "", upload=None, seed: int = 0,
                    count: int = 8) -> tuple[Image.Image, str]:
        """Rows: the inputs, then each model's reconstructions; plus a table of per-item errors."""
        entries = self._same_inputs(names)
        first, kind = entries[0], entries[0].kind
        if upload:
            x, note = self._upload(first, upload)
            labels = ["upload"]
        else:
            n = len(self._data(first).test_x)
            picked = _parse_indices(indices, n) if str(indices or "").strip() else \
                np.random.default_rng(_seed(seed)).choice(n, size=min(int(count), n), replace=False).tolist()
            x = self._test_items(first, picked)
            note = f"test {kind.item}s {', '.join(map(str, picked))} of {first.dataset_name}"
            labels = [str(i) for i in picked]
        rows, table = [x], ["| model | " + " | ".join(labels) + " | mean |", "|---" * (len(labels) + 2) + "|"]
        for e in entries:
            r = e.reconstruct(x)
            rows.append(r)
            err = kind.errors(r, x)
            table.append(f"| {e.name} | " + " | ".join(f"{v:.4f}" for v in err.tolist()) + f" | {err.mean():.4f} |")
        grid = kind.grid(kind.concat(rows), nrow=len(x), target=64,
                         labels=[f"{who} {label}" for who in ["input", *(e.name for e in entries)] for label in labels])
        text = (f"Top row: {note}. Below, one row per model: {', '.join(e.name for e in entries)}.\n\n"
                f"Reconstruction error, {kind.error_name}:\n\n" + "\n".join(table))
        return grid, text

    def anomalies(self, name: str, level: float = 95.0, worst: int = 16, rule: str = "percentile"
                  ) -> tuple[object, object, str, object]:
        """Histogram of anomaly scores (reconstruction errors) over the test set with a threshold chosen by
        `rule` at `level` (percentile, fpr, iqr, mad: anomaly.choose_threshold), the worst items with their
        reconstructions, and where labels mark anomalies, ROC and PR curves. Returns (histogram, worst
        items, Markdown, curves figure or None)."""
        entry = self.load(name)
        if rule not in THRESHOLD_RULES:
            raise ViewError(f"the threshold rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
        level = _number(level, "the threshold level")
        worst = int(_number(worst, "the number of items shown"))
        if not 1 <= worst <= 64:
            raise ViewError("show between 1 and 64 of the worst items")
        data, kind = self._data(entry), entry.kind
        errors = self._scores(entry)
        truth = data.is_anomaly(data.test_y) if data.anomaly_classes else None
        try:
            threshold = choose_threshold(errors, rule, level, errors[~truth] if truth is not None else None)
        except ValueError as e:
            raise ViewError(str(e)) from None
        order = np.argsort(-errors)[:worst]
        x = self._test_items(entry, order)
        shown = kind.flagged(x, entry.reconstruct(x), [f"#{i} ({data.label(i)})" for i in order], errors[order])
        fig = figures.error_histogram(errors, threshold.value, f"{name}: anomaly scores of {len(errors):,} test "
                                      f"{kind.item}s", f"reconstruction error ({kind.error_name})")
        above = int((errors > threshold.value).sum())
        text = [f"Threshold **{threshold.value:.4g}**: {threshold.explanation}; **{above}** of {len(errors):,} "
                f"{kind.item}s are above it and would be flagged."]
        curve_fig = None
        if truth is not None:
            report = detection_report(errors, truth, threshold.value)
            anomaly = ", ".join(data.classes[i] for i in data.anomaly_classes)
            if "roc_auc" in report:
                text.append(f"Labels mark {report['anomalies']} anomalies ({anomaly}): ROC-AUC **{report['roc_auc']:.3f}**, "
                            f"average precision **{report['average_precision']:.3f}**; at this threshold precision "
                            f"**{report['precision']:.2f}**, recall **{report['recall']:.2f}**, F1 **{report['f1']:.2f}**.")
                c = curves(errors, truth)
                curve_fig = figures.detection_curves(c["roc"], c["pr"], report["roc_auc"], report["average_precision"],
                                                     f"{name}: finding the {anomaly} {kind.item}s")
        how = ("(top: input, bottom: reconstruction)" if kind.shown_as == "image" else
               "(each cell shaded by its share of the row's error; values in the columns' own units)")
        text.append(f"The {len(order)} highest scores {how}: "
                    + ", ".join(f"#{i} ({data.label(i)}, {errors[i]:.3g})" for i in order) + ".")
        return fig, shown, "  \n".join(text), curve_fig

    # ---- 3. latent sliders -------------------------------------------------------------

    def _slider_axes(self, entry: LoadedCheckpoint):
        return entry.cached("sliders", lambda: slider_axes(entry.codes, entry.axes, MAX_SLIDERS))

    def slider_setup(self, name: str, index) -> tuple[list[dict], Image.Image, str]:
        """The sliders for a model, set to the code of test item `index`: [{label, minimum, maximum, value}].
        Without the model's dataset: the sliders start from the zero code (`_prior_sliders`)."""
        entry = self.load(name)
        missing = self._missing(entry)
        if missing is not None:
            sliders = self._prior_sliders(entry)
            d, k = entry.model.latent_dim, len(sliders)
            start = ("the prior's mean" if entry.model.sample_sources()[0].generative else
                     "the zero code (this model has no prior, so its codes may sit elsewhere)")
            which = f"one slider per latent coordinate ({d}-D code)" if d == k else \
                f"the first {k} of the {d} latent coordinates (the others stay 0)"
            text = (f"{DatasetDownloads.title(missing.dataset)} is not in this server's data folder, so there is no "
                    f"test {entry.kind.item} to start from: {which}, starting at {start}, each from -3 to 3 (the "
                    f"prior's ±3 standard deviations). Get the dataset under 'Datasets' at the top of the page to "
                    f"start from its items.")
            return sliders, self.decode_sliders(name, index, [s["value"] for s in sliders]), text
        i = self._index(entry, index)
        sliders = self._slider_specs(entry, i)
        d, item = entry.model.latent_dim, entry.kind.item
        what = (f"one slider per latent coordinate ({d}-D code)" if d <= MAX_SLIDERS else
                f"the top {MAX_SLIDERS} principal directions of the {d}-D codes; the other directions keep "
                f"{item} {i}'s values")
        extra = (" Quantized codes are decoded as moved, without snapping to the codebook."
                 if entry.model.code_kind == "quantized" else "")
        text = (f"Starting from test {item} {i} (label {self._data(entry).label(i)}): {what}. Ranges span ±3 "
                f"standard deviations of the test codes.{extra}")
        return sliders, self.decode_sliders(name, i, [s["value"] for s in sliders]), text

    def _slider_specs(self, entry: LoadedCheckpoint, i: int) -> list[dict]:
        """[{label, minimum, maximum, value}] of the sliders set to test item i's code."""
        axes = self._slider_axes(entry)
        sliders = []
        for label, lo, hi, v in zip(axes.labels, axes.low, axes.high, axes.values(entry.codes[i])):
            lo, hi = float(min(lo, v)), float(max(hi, v))
            if hi - lo < 1e-6:  # a dead dimension: give the slider some room anyway
                lo, hi = lo - 1.0, hi + 1.0
            sliders.append({"label": label, "minimum": round(lo, 3), "maximum": round(hi, 3), "value": round(float(v), 3)})
        return sliders

    def _prior_sliders(self, entry: LoadedCheckpoint) -> list[dict]:
        """Sliders without the dataset: the first MAX_SLIDERS latent coordinates at 0, each from -3 to 3."""
        k = min(entry.model.latent_dim, MAX_SLIDERS)
        return [{"label": f"z[{j}]", "minimum": -3.0, "maximum": 3.0, "value": 0.0} for j in range(k)]

    def decode_sliders(self, name: str, index, values: list[float]) -> Image.Image:
        """The hot path of the page: slider values -> decoded item."""
        entry = self.load(name)
        missing = self._missing(entry)
        count = len(self._prior_sliders(entry)) if missing is not None else len(self._slider_axes(entry).labels)
        try:
            vals = np.asarray([float(v) if v is not None else 0.0 for v in values][:count], np.float32)
        except (TypeError, ValueError):
            raise ViewError(f"{name} needs {count} slider values, as numbers") from None
        if len(vals) < count or not np.isfinite(vals).all():
            raise ViewError(f"{name} needs {count} finite slider values")
        if missing is not None:  # the first coordinates as the sliders set them, the others 0
            z = np.zeros(entry.model.latent_dim, np.float32)
            z[:count] = vals
        else:
            i = self._index(entry, index)
            z = self._slider_axes(entry).compose(entry.codes[i], vals)
        return entry.kind.show(entry.decode(z[None])[0], SLIDER_IMAGE)

    # ---- 4. interpolate ----------------------------------------------------------------

    def _endpoints(self, entry, index_a, index_b, upload_a, upload_b):
        """The two items (2, ...) as the model's input, and their codes (2, D)."""
        xa, _ = self._item(entry, index_a, upload_a)
        xb, _ = self._item(entry, index_b, upload_b)
        x = entry.kind.concat([xa, xb])
        return x, entry.encode(x).numpy()

    def interpolation_strip(self, names: list[str], index_a, index_b, upload_a=None, upload_b=None,
                            mode: str = "linear", steps: int = 10) -> tuple[Image.Image, str]:
        """For each model, a row: item A, the decodes of z(t) for N steps of t in [0, 1], item B."""
        steps = int(_number(steps, "the number of steps"))
        if not 2 <= steps <= 30:
            raise ViewError("the number of steps must be between 2 and 30")
        entries = self._same_inputs(names)
        rows = []
        for entry in entries:
            x, (za, zb) = self._endpoints(entry, index_a, index_b, upload_a, upload_b)
            try:
                path = interpolate(za, zb, np.linspace(0, 1, steps), mode)
            except ValueError as e:
                raise ViewError(str(e)) from None
            rows.append(entry.kind.concat([x[:1], entry.decode(path), x[1:]]))
        labels = [f"{e.name} {t}" for e in entries for t in ["A", *(f"t={t:.2f}" for t in np.linspace(0, 1, steps)), "B"]]
        grid = entries[0].kind.grid(entries[0].kind.concat(rows), nrow=steps + 2, target=64, padding=2, labels=labels)
        text = (f"{mode.capitalize()} interpolation in {steps} steps, one row per model "
                f"({', '.join(e.name for e in entries)}): the input A, then decodes of z(t) from t = 0 to 1, then the "
                "input B. A VAE's path stays on the data; an AE's often passes through blurs and non-digits.")
        return grid, text

    def interpolate_at(self, name: str, index_a, index_b, t: float, mode: str = "linear",
                       upload_a=None, upload_b=None) -> Image.Image:
        entry = self.load(name)
        _, (za, zb) = self._endpoints(entry, index_a, index_b, upload_a, upload_b)
        t = _number(t, "t")
        if not 0 <= t <= 1:
            raise ViewError("t must be between 0 and 1")
        try:
            z = interpolate(za, zb, [t], mode)
        except ValueError as e:
            raise ViewError(str(e)) from None
        return entry.kind.show(entry.decode(z)[0], INTERPOLATION_IMAGE)

    # ---- decoding in the page ------------------------------------------------------------------

    def page_decoder(self, name: str) -> PageExport:
        """The model's decoder written for pages (once per checkpoint version), or why the server decodes."""
        entry = self.load(name)
        if entry.kind.shown_as != "image":
            return PageExport(None, f"its {entry.kind.item}s are shown as a table")
        return entry.cached("page_decoder", lambda: self.pages.export(entry.model, entry.name))

    def _page_view(self, entry: LoadedCheckpoint, target: int) -> dict:
        export = self.page_decoder(entry.name)
        view = {"model": entry.name, "decoder": None if export.index_file is None else str(export.index_file),
                "reason": export.reason, "summary": export.summary}
        if export.index_file is not None:
            view.update(shape=list(entry.input_shape), scale=entry.kind.scale_for(entry.input_shape, target))
        return view

    def page_sliders(self, name: str, index) -> dict:
        """What the page needs to decode the sliders itself: the code is offset + values · directions, the
        sliders' values as `slider_setup` sets them (JSON-able)."""
        entry = self.load(name)
        view = self._page_view(entry, SLIDER_IMAGE)
        if view["decoder"] is None:
            return view
        if self._missing(entry) is not None:  # from the zero code along the first coordinates (_prior_sliders)
            sliders = self._prior_sliders(entry)
            directions = np.eye(len(sliders), entry.model.latent_dim)
            return {**view, "offset": [0.0] * entry.model.latent_dim, "directions": directions.tolist(),
                    "values": [s["value"] for s in sliders]}
        i = self._index(entry, index)
        axes = self._slider_axes(entry)
        base = np.asarray(entry.codes[i], np.float64)
        directions = np.asarray(axes.directions, np.float64)
        offset = base - np.asarray(axes.values(entry.codes[i]), np.float64) @ directions  # compose(), unrolled
        values = [s["value"] for s in self._slider_specs(entry, i)]
        return {**view, "offset": offset.tolist(), "directions": directions.tolist(), "values": values}

    def map_page(self, name: str, projection) -> dict:
        """What the page needs to decode a map position itself while the marker is dragged: the code at map
        position (x, y) is offset + (x, y) · directions, exactly map_point_code's raw and PCA cases (JSON-able).
        A UMAP map's inverse is a fit that runs on the server: its spec says so and the server decodes."""
        entry = self.load(name)
        view = self._page_view(entry, SLIDER_IMAGE)
        if view["decoder"] is None:
            return view
        try:
            method = resolve_projection(projection, entry.model.latent_dim)
        except ValueError as e:
            raise ViewError(str(e)) from None
        d = entry.model.latent_dim
        if method == "umap":
            return {**view, "decoder": None, "reason": "a UMAP map's inverse runs on the server"}
        if method == "raw":
            offset, directions = np.zeros(d), np.eye(min(d, 2), d)
        else:
            axes = entry.axes
            offset, directions = np.asarray(axes.mean, np.float64), np.asarray(axes.directions[:min(d, 2)], np.float64)
        return {**view, "projection": method, "offset": offset.tolist(), "directions": directions.tolist(),
                "values": None, "hint": "Click empty space on the map, or drag its marker, to decode there."}

    def page_interpolation(self, name: str, index_a, index_b, t=0.5, mode: str = "linear", upload_a=None,
                           upload_b=None) -> dict:
        """What the page needs to decode the t slider itself: both endpoint codes and the path (JSON-able)."""
        entry = self.load(name)
        view = self._page_view(entry, INTERPOLATION_IMAGE)
        if view["decoder"] is None:
            return view
        if mode not in ("linear", "spherical"):
            raise ViewError(f"interpolation must be 'linear' or 'spherical', got {mode!r}")
        _, (za, zb) = self._endpoints(entry, index_a, index_b, upload_a, upload_b)
        t = _number(t, "t")
        return {**view, "za": np.asarray(za, np.float64).tolist(), "zb": np.asarray(zb, np.float64).tolist(),
                "mode": mode, "t": t}

    # ---- draw to encode: a drawing or an upload placed on the latent maps ---------------------------

    def drawable(self, name: str) -> str | None:
        """None when the model's items can be drawn in the sketchpad (pictures); else why not."""
        entry = self.load(name)
        if entry.kind.shown_as != "image":
            return f"{name}'s {entry.kind.item}s are table rows: the sketchpad is for image models"
        return None

    def _drawn(self, entry: LoadedCheckpoint, drawing=None, upload=None) -> tuple[torch.Tensor, str]:
        """The page's drawing (a PNG data URL) or an uploaded image file as the model's input, (1, ...), and what
        was done to it: an upload's conversion (grey or RGB, resized, inverted to the training images' ink)."""
        why = self.drawable(entry.name)
        if why:
            raise ViewError(why)
        if upload:
            return self._upload(entry, upload)
        png = _png_bytes(drawing)
        reference = self._test_items(entry, list(range(min(200, len(self._data(entry).test_x)))))
        try:
            return entry.kind.read_drawing(png, entry.input_shape, reference)
        except UploadError as e:
            raise ViewError(str(e)) from None

    @torch.no_grad()
    def _code_of(self, entry: LoadedCheckpoint, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(the code the map places: the posterior mean or the deterministic code (D,), the posterior's std (D,)
        or None for a model without one)."""
        q = entry.model.posterior(x)
        if q is None:
            return entry.encode(x)[0].double().numpy(), None
        return q.mean[0].double().cpu().numpy(), q.std[0].double().cpu().numpy()

    def map_position(self, name: str, projection: str, code, std=None) -> dict:
        """Where `latent_map(name, projection)` puts a code, in the map's coordinates: {"method", "x", "y",
        "ellipse" (the 2-σ contour of N(code, diag(std²)) mapped: exact on raw 2-D codes, W Σ Wᵀ through the PCA
        axes; None without a std and on UMAP), "note"}. On a UMAP map a new code has no exact place: the mark
        sits on its nearest test code's point."""
        entry = self.load(name)
        code = np.asarray(code, np.float64)
        try:
            method = resolve_projection(projection, entry.model.latent_dim)
        except ValueError as e:
            raise ViewError(str(e)) from None
        if method == "umap":
            emb = self.umap.get(entry.key, entry.codes)
            if emb is not None:
                nearest = int(np.argmin(((np.asarray(entry.codes, np.float64) - code) ** 2).sum(1)))
                return {"method": "umap", "x": float(emb[nearest, 0]), "y": float(emb[nearest, 1]), "ellipse": None,
                        "nearest": nearest,
                        "note": f"UMAP has no exact place for a new code: marked at its nearest test code's point "
                                f"(#{nearest}); no ellipse is drawn on a UMAP map"}
            method = "pca"  # what the map shows until the UMAP is ready
        W, centre = map_frame(entry.model.latent_dim, method, entry.axes if method == "pca" else None)
        x, y = W @ (code - centre)
        place = {"method": method, "x": float(x), "y": float(y), "ellipse": None, "note": ""}
        if std is not None:
            cov = W @ np.diag(np.asarray(std, np.float64) ** 2) @ W.T
            place["ellipse"] = map_ellipse([x, y], cov)
            place["note"] = ("the 2-σ ellipse of q(z|x)" if method == "raw" else
                             "the 2-σ ellipse of q(z|x) projected onto PC 1–2 (W Σ Wᵀ)")
        return place

    def encode_drawing(self, names: list[str], projection: str = "auto", drawing=None, upload=None) -> list[dict]:
        """Each model's reading of a drawing (the sketchpad's PNG data URL) or an uploaded image file: per model
        {"model", "input" (PIL: the drawing at the model's input size, as it sees it), "reconstruction" (PIL),
        "code" (D,), "std" (D,) or None, "conversion", and `map_position`'s "method", "x", "y", "ellipse", "note"}."""
        names = [n for n in (names or []) if n]
        if not names:
            raise ViewError("choose a model first")
        out = []
        for name in names:
            entry = self.load(name)
            x, conversion = self._drawn(entry, drawing, upload)
            code, std = self._code_of(entry, x)
            recon = entry.reconstruct(x)
            out.append({"model": name, "input": entry.kind.show(x[0], DRAWN_IMAGE),
                        "reconstruction": entry.kind.show(recon[0], DRAWN_IMAGE), "code": code.tolist(),
                        "std": None if std is None else std.tolist(), "conversion": conversion,
                        **self.map_position(name, projection, code, std)})
        return out

    @torch.no_grad()
    def resample_drawing(self, name: str, drawing=None, upload=None, k=RESAMPLES, seed=0) -> Resampled:
        """k decodes of z ~ q(z|x) for the drawing (or upload): how unsure the model is about it. A model
        without a posterior has one code per drawing: no items, and the caption says why."""
        entry = self.load(name)
        k = int(number_input(k, "the number of samples", 1, 32, whole=True))
        x, _ = self._drawn(entry, drawing, upload)
        q = entry.model.posterior(x)
        if q is None:
            return Resampled(None, None, f"**{name}** has no posterior: it encodes a drawing to one code z, not to "
                                         f"a distribution q(z|x), so there is nothing to sample; every decode of "
                                         f"its code is the reconstruction above.")
        eps = torch.randn((k, entry.model.latent_dim), generator=torch.Generator().manual_seed(_seed(seed)),
                          dtype=torch.float64)
        z = q.mean[0].double().cpu() + q.std[0].double().cpu() * eps
        items = entry.decode(z.numpy())
        spread = float(q.std[0].double().mean())
        return Resampled(items, entry.kind.grid(items, nrow=k, target=48),
                         f"**{name}**: {k} decodes of z ~ q(z|x) for this drawing (mean σ of q: {spread:.3g}). "
                         f"Alike: the model is sure what it sees; varied: it is not.")

    # ---- 5. sample -----------------------------------------------------------------------

    def sample_labels(self, name: str) -> tuple[str, str]:
        """The titles of the two sample grids: the model's own two ways of sampling."""
        a, b = self.load(name).model.sample_sources()[:2]
        return a.label, b.label

    def sample(self, name: str, temperature: float = 1.0, seed: int = 0) -> tuple[object, object, str, object]:
        """Two 7×7 grids (tables: 49 rows each), one per sample source the model names, what they show, and for
        tables a figure of each column's distribution in real and synthetic rows (else None)."""
        entry = self.load(name)
        temperature = _number(temperature, "temperature")
        if not temperature > 0:
            raise ViewError("temperature must be positive")
        seed = _seed(seed)
        n, grids, parts, drawn = SAMPLE_GRID * SAMPLE_GRID, [], [], []
        missing = self._missing(entry)
        for side, source in zip(("Left", "Right"), entry.model.sample_sources()[:2]):
            if source.name == "fitted" and missing is not None:  # fitted to the test codes: no test set here
                grids.append(None)
                parts.append(f"**{side}:** {source.label}: needs the codes of the test set of "
                             f"{DatasetDownloads.title(missing.dataset)}, which is not in this server's data folder "
                             f"(get it under 'Datasets' at the top of the page).")
                continue
            codes = entry.codes if source.name == "fitted" else None
            items = entry.kind.clean_output(
                entry.model.sample(n, source.name, temperature, torch.Generator().manual_seed(seed), codes))
            grids.append(entry.kind.grid(items, SAMPLE_GRID, target=40))
            drawn.append((source.label, items))
            parts.append(f"**{side}:** {source.explanation}")
        distributions = None
        if entry.kind.shown_as == "table":  # columns of real and synthetic rows side by side
            real = entry.kind.frame(self._data(entry).test_x)
            distributions = figures.column_distributions(
                real, {label: entry.kind.frame(items) for label, items in drawn}, f"{name}: real test rows vs samples")
        return grids[0], grids[1], " ".join(parts), distributions

    # ---- 6. denoise ----------------------------------------------------------------------

    def _pca_baseline(self, entry: LoadedCheckpoint, k: int) -> PCABaseline:
        key = (entry.dataset_name, entry.input_shape, k)
        with self._lock:
            if key not in self._baselines:
                self._baselines[key] = PCABaseline(self._data(entry).train_x, k, entry.kind)
            return self._baselines[key]

    def denoise(self, names: list[str], index=0, upload=None, noise: str = "gaussian", level: float = 0.5,
                seed: int = 0, columns: list[str] | None = None) -> tuple[object, object, list[tuple[object, str]], str]:
        """Clean item, its corrupted version, and each model's (plus PCA's, where it means something) output with
        its fidelity. For tables this is imputation: cells of a row (of `columns`, default any) are blanked or
        shuffled, and the first output is one table of the truth, the corrupted row and each model's output."""
        names = [n for n in (names or []) if n]
        if not names:
            raise ViewError("choose at least one model")
        entries = [self.load(n) for n in names]
        first = entries[0]
        kind = first.kind
        if noise not in kind.noise_kinds:
            raise ViewError(f"noise must be one of {', '.join(kind.noise_kinds)}")
        level = _number(level, "the noise level")
        if not 0 <= level <= kind.noise_limit(noise):
            raise ViewError(f"{noise} noise level must be between 0 and {kind.noise_limit(noise):g}")
        clean, note = self._item(first, index, upload)
        try:
            noisy = kind.corrupt(clean, noise, level, torch.Generator().manual_seed(_seed(seed)),
                                 **({"columns": list(columns)} if columns else {}))
        except ValueError as e:
            raise ViewError(str(e)) from None
        outputs, results = [], []
        for e in entries:
            if e.input_shape != first.input_shape:
                outputs.append((kind.blank(first.input_shape), f"{e.name}: skipped, it takes {e.input_shape} {kind.item}s"))
                continue
            out = e.reconstruct(noisy)
            results.append((e.name, out))
            outputs.append((kind.show(out[0]), f"{e.name}: {kind.fidelity(out, clean)}"))
        baseline = ""
        if kind.linear_baseline:
            k = min(first.model.latent_dim, int(np.prod(first.input_shape)))
            pca = self._pca_baseline(first, k).reconstruct(noisy)
            outputs.append((kind.show(pca[0]), f"PCA, {k} components: {kind.fidelity(pca, clean)}"))
            baseline = (f" PCA keeps as many components as {first.name}'s code has dimensions, fitted on "
                        f"{first.dataset_name}'s training set.")
        text = (f"Input: {note}. Corrupted: {noise} at {level:g}, **{kind.fidelity(noisy, clean)}** against the "
                f"clean {kind.item}. Each output's {kind.fidelity_name} is against the clean {kind.item} (higher is "
                f"better).{baseline}")
        if kind.shown_as == "table":  # one table: the truth, the corrupted row, each model's reconstruction
            text += " " + "; ".join(caption for _, caption in outputs) + "."
            table = kind.grid(kind.concat([clean, noisy, *(out for _, out in results)]),
                              labels=["truth", f"{noise} ({level:g})", *(n for n, _ in results)])
            return table, None, [], text
        return kind.show(clean[0]), kind.show(noisy[0]), outputs, text

    # ---- 7. diagnostics -------------------------------------------------------------------

    def latent_usage(self, name: str) -> tuple[object, object, Image.Image, str]:
        """Which latent dimensions the model uses: KL per dimension (models with a posterior), variance of
        the posterior mean over the test set with the active-unit threshold, and traversals of the most
        used dimensions. Returns (KL figure or None, variance figure, traversal grid, Markdown)."""
        entry = self.load(name)
        usage = self._usage(entry)
        d, active = entry.model.latent_dim, int(usage.active.sum())
        kl_fig = None if usage.kl is None else figures.latent_usage(
            usage.kl, usage.active, f"{name}: KL to N(0, 1) per dimension, test mean", "KL (nats)")
        var_fig = figures.latent_usage(usage.variance, usage.active, f"{name}: variance of the code over the test set",
                                       "variance", ACTIVE_VARIANCE)
        dims = usage.order[:MAX_TRAVERSALS]
        has_posterior = usage.kl is not None
        scales = None if has_posterior else np.sqrt(usage.variance)  # prior units, or the codes' own spread
        z = traversals(entry.codes.mean(0), dims, TRAVERSAL_STEPS, scales)
        grid = entry.kind.grid(entry.decode(z), nrow=len(TRAVERSAL_STEPS), target=40,
                               labels=[f"z[{d}] {t:+g}" for d in dims for t in TRAVERSAL_STEPS])
        lines = [f"**{active} of {d}** dimensions active (variance of the code over the test set above "
                 f"{ACTIVE_VARIANCE}; Burda, Grosse & Salakhutdinov 2016)."]
        if has_posterior:
            total = float(usage.kl.sum())
            lines.append(f"Total KL to the prior: **{total:.3g} nats** per {entry.kind.item}; the most used "
                         f"dimensions: " + ", ".join(f"z[{i}] {usage.kl[i]:.3g}" for i in usage.order[:5]) + ".")
            if total < 0.1:
                lines.append("⚠️ **The KL is near zero: the posterior has collapsed onto the prior** and the "
                             "decoder ignores the code. Lower β, or train longer with a KL warm-up.")
        if active == 0:
            lines.append("⚠️ **No dimension is used**: every input gets nearly the same code.")
        elif active <= d // 2:
            lines.append(f"⚠️ **Most dimensions are unused** ({d - active} of {d} dead): the model would do as "
                         f"well with a {active}-D code.")
        unit = "t × 1 (prior units)" if has_posterior else "t × the code's standard deviation along it"
        shown = f"the {len(dims)} most used" if len(dims) < d else "every dimension"
        lines.append(f"Traversals below: one row per dimension ({shown}, most used first: "
                     + ", ".join(f"z[{i}]" for i in dims) + f"), decoding the mean code plus {unit}, "
                     f"t from {TRAVERSAL_STEPS[0]:g} to {TRAVERSAL_STEPS[-1]:g}.")
        return kl_fig, var_fig, grid, "  \n".join(lines)

    def _usage(self, entry: LoadedCheckpoint):
        return entry.cached("usage", lambda: latent_usage(entry.model, self._data(entry).test_x, entry.kind))

    def prior_fit(self, name: str) -> tuple[object, object, str]:
        """What the encoder produces against N(0, I): per dimension the codes' mean and std (a figure), how far
        samples of N(0, I) land from the nearest test code against how far test codes lie from each other (a
        figure), and what that means for sampling (Markdown). Computed once per checkpoint."""
        entry = self.load(name)
        # The whole answer is cached: building its two plotly figures alone takes a quarter of a second here.
        return entry.cached("prior_fit", lambda: self._prior_fit(entry))

    def _prior_fit(self, entry: LoadedCheckpoint) -> tuple[object, object, str]:
        data, name = self._data(entry), entry.name
        moments = code_moments(entry.model, data.test_x, entry.kind)
        gap = prior_gap(decoder_inputs(entry.model, data.test_x, entry.kind))
        d, item = entry.model.latent_dim, entry.kind.item
        what = ("samples z ~ q(z|x), the codes its decoder is trained on" if moments.has_posterior else
                "its codes (deterministic)")
        moments_fig = figures.code_moments(moments.mean, moments.std, f"{name}: {what.split(',')[0]} vs N(0, 1)",
                                           moments.mean_std if moments.has_posterior else None)
        gap_fig = figures.distance_histograms(gap.from_prior, gap.between_codes, f"{name}: where N(0, I) samples land")
        worst = int(np.argmax(np.abs(moments.mean) + np.abs(np.log(np.maximum(moments.std, 1e-12)))))
        lines = [f"**{name}** ({entry.model.name}, {d}-D), over {len(gap.between_codes):,} test {item}s of "
                 f"{entry.dataset_name}: {what}.",
                 f"Per dimension (first chart): dot = mean, bar = ±1 standard deviation; the grey band is N(0, 1), "
                 f"mean 0 ± 1. Means from {moments.mean.min():.2g} to {moments.mean.max():.2g}, standard deviations "
                 f"from {moments.std.min():.2g} to {moments.std.max():.2g}; farthest from N(0, 1): z[{worst}] "
                 f"(mean {moments.mean[worst]:.2g}, std {moments.std[worst]:.2g})."]
        if moments.has_posterior:
            lines.append("The orange inner bar is the spread of the posterior means alone; the rest of the blue bar "
                         "is each item's own posterior noise σ. The KL term pulls their mixture, q(z), towards N(0, I).")
        lines.append(f"Second chart: {len(gap.from_prior):,} samples of N(0, I), each one's distance to the nearest "
                     f"test code (red), against each test code's distance to its nearest other one (blue). Medians "
                     f"**{np.median(gap.from_prior):.3g}** vs **{np.median(gap.between_codes):.3g}** (ratio "
                     f"**{gap.ratio:.2f}**: about 1 where the prior covers the codes); **{gap.far:.0%}** of the prior "
                     f"samples land farther from every test code than 95% of test codes are from their neighbour "
                     f"(about 5% where the two look alike).")
        generative = any(s.name == "prior" and s.generative for s in entry.model.sample_sources())
        if generative:
            lines.append("N(0, I) is this model's prior: training pulled its codes there, so decoding N(0, I) "
                         "lands where the decoder has been" + (" (and it mostly does)." if gap.far < 0.2 else
                                                               ", though here many samples still land off the codes."))
        else:
            lines.append("N(0, I) is not this model's prior: nothing in its training put codes there, so samples "
                         "that land far from every code decode to things the decoder never saw"
                         + (" (here most do: **this is why sampling N(0, I) fails**)." if gap.far >= 0.2 else
                            " (here the codes happen to lie around the origin, so fewer do)."))
        return moments_fig, gap_fig, "  \n".join(lines)

    def disentanglement(self, name: str) -> tuple[object, Image.Image | None, str]:
        """For a model of data with known factors: the scorecard (MIG, FactorVAE score, DCI; Markdown), DCI's
        importance matrix (a figure) and traversals of each dimension labelled by the factor it best explains.
        For other data, (None, None, a message naming the built-in data that has factors)."""
        entry = self.load(name)
        data = self._data(entry)
        if data.test_factors is None or not data.factor_names:
            having = [n for n, d in DATASETS.items() if d.known_factors]
            ready = [n for n in self.checkpoint_names() if self._dataset_of(n) in having]
            offer = (f" Choose a checkpoint trained on it ({', '.join(ready)})" if ready else
                     " Train one on it in the Train tab (a β-VAE, a few latent dimensions)")
            return None, None, (
                f"**The scorecard needs known factors of variation**: each {entry.kind.item} labelled with the "
                f"values that made it (shape, position, ...), so that each latent dimension can be checked against "
                f"them. {name} was trained on **{entry.dataset_name}**, which has none. The built-in "
                + " and ".join(f"**{n}** ({DATASETS[n].description})" for n in having) + " has them." + offer + ".")
        try:
            card = entry.cached("scorecard", lambda: scorecard(entry.model, data))
        except ValueError as e:
            raise ViewError(f"{name}: {e}") from None
        return entry.cached("disentanglement", lambda: self._disentanglement(entry, card))

    def _disentanglement(self, entry: LoadedCheckpoint, card: dict) -> tuple[object, Image.Image, str]:
        data, name = self._data(entry), entry.name
        names = card["factor_names"]
        fig = figures.importance_heatmap(np.asarray(card["importance"]), names,
                                         f"{name}: how much each dimension serves to predict each factor (DCI)")
        # Dimensions that explain a factor first (by how much), then the rest by their spread.
        dims = sorted(card["dims"], key=lambda d: (d["factor"] is None, -d["share"] if d["factor"] else -d["std"]))
        dims = dims[:MAX_TRAVERSALS]
        has_posterior = self._usage(entry).kl is not None
        std = np.asarray([d["std"] for d in sorted(card["dims"], key=lambda d: d["dim"])])
        z = traversals(entry.codes.mean(0), [d["dim"] for d in dims], TRAVERSAL_STEPS,
                       None if has_posterior else np.maximum(std, 1e-6))
        row_labels = [f"z[{d['dim']}]: {d['factor'] or 'no factor'} ({d['share']:.2f})"
                      + (" (unused)" if d["std"] < COLLAPSED_STD else "") for d in dims]
        grid = entry.kind.grid(entry.decode(z), nrow=len(TRAVERSAL_STEPS), target=64,
                               labels=[f"{label}, t={t:+g}" for label in row_labels for t in TRAVERSAL_STEPS],
                               row_labels=row_labels)
        chance = card["factor_vae_chance"]
        lines = [f"**{name}** on {card['items']:,} test {entry.kind.item}s of {entry.dataset_name}, whose factors "
                 f"are known: {', '.join(names)}. Each score is 1 for a perfectly disentangled code, where each "
                 f"factor lives in one latent dimension and each dimension carries one factor.", "",
                 "| score | value | what it measures |", "|---|---|---|",
                 f"| MIG | **{card['mig']:.3f}** | per factor, the gap in mutual information between the two "
                 "dimensions that know most about it, over the factor's entropy (Chen et al. 2018); 0 when no "
                 "single dimension stands out |",
                 f"| FactorVAE score | **{card['factor_vae']:.3f}** (codes without information: {chance:.3f}) | "
                 "fix one factor, and the dimension that varies least should name it: the accuracy of that vote "
                 "(Kim & Mnih 2018) |",
                 f"| DCI disentanglement | **{card['dci_disentanglement']:.3f}** | each dimension predicts at most "
                 "one factor (Eastwood & Williams 2018; random-forest importances, the heat map below) |",
                 f"| DCI completeness | **{card['dci_completeness']:.3f}** | each factor is predicted by one dimension |",
                 f"| DCI informativeness | **{card['dci_informativeness']:.3f}** | how well the whole code predicts "
                 "the factors: held-out accuracy, mean over factors |", "",
                 "| factor | values | MIG | predicted from the code (chance) |", "|---|---|---|---|"]
        for f in names:
            k = len(data.factor_values.get(f, [])) or len(np.unique(data.test_factors[:, names.index(f)].numpy()))
            lines.append(f"| {f} | {k} | {card['mig_per_factor'][f]:.3f} | {card['dci_accuracy'][f]:.0%} "
                         f"({1 / k:.0%}) |")
        if max(card["mig"], card["dci_disentanglement"]) < 0.2:
            lines += ["", "Low scores like these mean an entangled code: each factor is spread over several "
                      "dimensions (the heat map's columns have no single dark cell) and each dimension mixes "
                      "several factors (so traversals change more than one thing at once)."]
        unit = "t × 1 (prior units)" if has_posterior else "t × the dimension's standard deviation"
        lines += ["", f"Traversals (below the heat map): one row per dimension, labelled by the factor it shares "
                  f"most information with and that share (normalized mutual information; under "
                  f"{EXPLAINS_NOTHING:g}: no factor). Each row decodes the mean code plus {unit}, t from "
                  f"{TRAVERSAL_STEPS[0]:g} to {TRAVERSAL_STEPS[-1]:g}, left to right: a disentangled dimension "
                  "changes only its factor."]
        return fig, grid, "\n".join(lines)

    def _dataset_of(self, name: str) -> str | None:
        try:
            return self.catalog.metadata(name).get("dataset", {}).get("name")
        except CatalogError:
            return None

    def linear_pca(self, name: str) -> tuple[object, Image.Image | None, str]:
        """For a model whose decoder is linear (decode(z) = W z + b): the principal angles between W's column
        space and the top-k PCA directions of its training data (k = its code size; a figure, against a random
        subspace for scale), the first PCA_EXAMPLES test items with its and PCA's reconstructions, and what they show. For
        other models, (None, None, a message)."""
        entry = self.load(name)
        linear = entry.model.linear_decoder()
        if linear is None or not entry.kind.linear_baseline:
            return None, None, (
                f"**{name}** ({entry.model.name}) does not have a linear decoder: its decode(z) is not W z + b, so "
                "there is no column space to set against PCA. Choose a linear autoencoder (model linear_ae: no "
                "nonlinearity, MSE loss), such as digits_linear_ae, or train one in the Train tab.")
        return entry.cached("linear_pca", lambda: self._linear_pca(entry, linear[0]))

    def _linear_pca(self, entry: LoadedCheckpoint, weight: torch.Tensor) -> tuple[object, Image.Image, str]:
        data, kind, name = self._data(entry), entry.kind, entry.name
        pixels = weight.shape[0]
        k = min(entry.model.latent_dim, pixels)
        baseline = self._pca_baseline(entry, k)
        comparison = compare_with_pca(weight.numpy(), baseline.components.numpy(), baseline.explained.numpy())
        test = kind.prepare(data.test_x)
        ae_error = float(kind.errors(entry.reconstruct(test), test).mean())
        pca_error = float(kind.errors(baseline.reconstruct(test), test).mean())
        degrees = comparison.degrees
        fig = figures.principal_angles(degrees, np.degrees(comparison.random_angles),
                                       f"{name}: principal angles to the top {k} PCA directions")
        shown = list(range(min(PCA_EXAMPLES, len(data.test_x))))
        x = self._test_items(entry, shown)
        grid = kind.grid(kind.concat([x, entry.reconstruct(x), baseline.reconstruct(x)]), nrow=len(shown), target=64,
                         row_labels=["input", name, f"PCA, {k} comp."])
        lines = [f"**{name}** decodes z to W z + b, a {k}-D plane in the {pixels}-D space of {entry.dataset_name} "
                 f"{kind.item}s. PCA's best {k}-D plane is spanned by the top {k} principal directions of the same "
                 f"training {kind.item}s ({comparison.explained.sum():.0%} of their variance). A linear autoencoder "
                 f"trained on squared error should find that plane (Baldi & Hornik 1989).",
                 f"The chart: the {k} principal angles between the two planes, smallest first. 0° means a direction "
                 f"they share, 90° one of them lacks entirely. Largest here: **{degrees.max():.2f}°**; a random "
                 f"{k}-D plane would be at {np.degrees(comparison.random_angles).max():.0f}° (grey)."]
        if degrees.max() < 10:
            lines.append("**The linear AE has found PCA's subspace.** Its own axes need not be the principal "
                         "directions: any invertible mix of them spans the same plane and decodes as well, which "
                         "is why its latent map looks like a skewed PCA map.")
        else:
            lines.append("The linear AE has **not** found PCA's subspace yet: train it longer (or with a higher "
                         "learning rate); squared error has no other minimum it could settle in (Baldi & Hornik).")
        lines.append(f"Below: test {kind.item}s {shown[0]}–{shown[-1]}, then {name}'s reconstructions, then PCA's "
                     f"with {k} components. Mean {kind.error_name} over the {len(data.test_x):,} test {kind.item}s: "
                     f"{name} **{ae_error:.5f}**, PCA **{pca_error:.5f}** (PCA is the best any {k}-D linear map can "
                     f"do on the training {kind.item}s).")
        return fig, grid, "  \n".join(lines)

    def codebook(self, name: str, level=1, code=None) -> tuple[object, Image.Image | None, Image.Image | None, str]:
        """A VQ model's codebook over the whole test set: per level, codes used / K, dead codes and perplexity;
        a grid of every code's decoded picture sized by usage (a figure); the chosen code (the level's most
        used where `code` is None) decoded alone beside the test items that use it most (an image); for
        residual VQ, test items reconstructed after levels 1, 1+2, ... with the error per level (an image).
        Models without a codebook get (None, None, None, a message naming the VQ models)."""
        entry = self.load(name)
        if entry.model.codebooks() is None:
            vq_models = [m for m, e in MODELS.items() if e.cls.code_kind == "quantized"]
            ready = [n for n in self.checkpoint_names() if self._model_of(n) in vq_models]
            return None, None, None, (
                f"**{name}** ({entry.model.name}) has no codebook: its code is continuous, not snapped to a set of "
                f"learned vectors. The codebook explorer is for the vector-quantized models "
                f"({', '.join(vq_models)}): choose " + (" or ".join(ready) + ", or train one" if ready else "train one")
                + " in the Train tab.")
        usage = entry.cached("codebook_usage",
                             lambda: codebook_usage(entry.model, self._data(entry).test_x, entry.kind))
        k, levels = usage.codebook_size, usage.levels
        level = int(number_input(level, "Level", 1, levels, whole=True)) - 1
        counts = usage.counts[level]
        code = int(np.argmax(counts)) if code is None else int(number_input(code, "Code", 0, k - 1, whole=True))
        pictures = entry.cached(f"codebook_pictures_{level}", lambda: self._code_pictures(entry, usage, level))
        fig = figures.codebook_grid(pictures, counts, f"{name}: level {level + 1} codes, area ∝ test-set usage",
                                    chosen=code)
        kind, data, item = entry.kind, self._data(entry), entry.kind.item
        users, uses = top_items(usage, level, code, CODE_USERS)
        alone = code_images(entry.model, level, [code], usage.tokens, levels)
        chosen = kind.grid(kind.clean_output(alone), nrow=1, target=64, row_labels=[f"code {code}"])
        if len(users):
            # Two labelled strips with a gap, so the code's own picture is not read as one more test item.
            top = kind.grid(kind.prepare(data.test_x[torch.as_tensor(users)]), nrow=len(users), target=64,
                            row_labels=["top users"])
            both = Image.new("RGB", (chosen.width + 16 + top.width, max(chosen.height, top.height)), "white")
            both.paste(chosen.convert("RGB"), (0, 0))
            both.paste(top.convert("RGB"), (chosen.width + 16, 0))
            chosen = both
        positions = usage.indices.shape[0] * usage.tokens
        lines = [f"**{name}** over all {len(data.test_x):,} test {item}s of {entry.dataset_name}: each {item} is "
                 f"{usage.tokens} code tokens, each snapped to one of K = {k} codebook vectors"
                 + (f" at each of {levels} levels (residual VQ: each level quantizes what the levels before it "
                    f"left)" if levels > 1 else "") + f"; {positions:,} tokens per level in all.", "",
                 "| level | codes used / K | dead codes | perplexity (of K) |", "|---|---|---|---|"]
        for lv in range(levels):
            dead = usage.dead(lv)
            lines.append(f"| {lv + 1} | **{usage.used[lv]} / {k}** | {len(dead)}"
                         + (f" ({', '.join(map(str, dead[:12]))}{', ...' if len(dead) > 12 else ''})" if dead else "")
                         + f" | **{usage.perplexity[lv]:.1f}** |")
        lines += ["", "Perplexity is exp(entropy) of how often each code is used over the whole test set: the "
                  "number of equally used codes that would be as spread out (K if all are used evenly). It is "
                  "counted over every test item at once; training logs a per-batch perplexity, which is lower for "
                  "small batches.", "",
                  f"Grid (left): level {level + 1}'s {k} codes in index order (8 per row, the row's first index on "
                  "the left), "
                  f"each drawn as what it decodes to on its own (its vector in every token"
                  + (", nothing at the other levels: deeper levels are small corrections, so they look faint"
                     if levels > 1 else "") + "), its area proportional to its use; a red × is a dead code, the "
                  "orange box the chosen one. Hover a code for its count; click it to choose it.", "",
                  f"**Code {code}** (level {level + 1}): {int(counts[code]):,} of {positions:,} tokens "
                  f"({counts[code] / positions:.1%}). Right, top: first the code decoded alone, then "
                  + (f"the {len(users)} test {item}s using it most: " + ", ".join(
                      f"#{i} ({u} of {usage.tokens} tokens)" for i, u in zip(users.tolist(), uses.tolist()))
                     if len(users) else f"no test {item} uses it (a dead code)") + "."]
        levels_image = None
        if levels > 1:
            levels_image, errors, shown_items = entry.cached("codebook_levels", lambda: self._levels(entry, usage))
            lines += ["", f"Right, bottom: residual levels, test {item}s {shown_items[0]}–{shown_items[-1]} one per "
                      f"row; left to right the input, then the reconstruction from level 1 alone, levels 1+2, ..., "
                      f"all {levels}. Mean {kind.error_name} over the test set after each level: "
                      + ", ".join(f"1–{lv + 1}: **{e:.5f}**" if lv else f"1: **{e:.5f}**"
                                  for lv, e in enumerate(errors)) + "."]
        return fig, chosen, levels_image, "\n".join(lines)

    def most_used_code(self, name: str, level=1) -> int | None:
        """The code of `level` (1-based) that most test tokens use; None for a model without a codebook."""
        entry = self.load(name)
        if entry.model.codebooks() is None:
            return None
        usage = entry.cached("codebook_usage",
                             lambda: codebook_usage(entry.model, self._data(entry).test_x, entry.kind))
        return int(np.argmax(usage.counts[int(number_input(level, "Level", 1, usage.levels, whole=True)) - 1]))

    def _model_of(self, name: str) -> str | None:
        try:
            return self.catalog.metadata(name).get("model")
        except CatalogError:
            return None

    def _code_pictures(self, entry: LoadedCheckpoint, usage, level: int) -> list[str]:
        """Every code of `level` decoded on its own, as PNG data URLs for the grid figure."""
        images = entry.kind.clean_output(code_images(entry.model, level, list(range(usage.codebook_size)),
                                                     usage.tokens, usage.levels))
        return [png_data_url(entry.kind.show(x, target=32)) for x in images]

    def _levels(self, entry: LoadedCheckpoint, usage):
        data, kind = self._data(entry), entry.kind
        x = kind.prepare(data.test_x)
        recons, errors = level_errors(entry.model, x, kind, torch.as_tensor(usage.indices))
        shown = list(range(min(LEVEL_EXAMPLES, len(x))))
        columns = [x[shown], *(kind.clean_output(r[shown]) for r in recons)]
        tiles = torch.stack(columns, 1).flatten(0, 1)  # item by item, each row input then levels
        grid = kind.grid(tiles, nrow=len(columns), target=48, row_labels=[f"#{i}" for i in shown])
        return grid, errors, shown

    # ---- datasets one click away --------------------------------------------------------------

    def dataset_download(self, name: str) -> tuple[str, bool]:
        """Start fetching a downloadable dataset (MNIST, Fashion-MNIST, CIFAR-10) into the data folder, in the
        background; (status Markdown, still running) as `dataset_status` says it."""
        if name not in DOWNLOADABLE:
            raise ViewError(f"{name!r} is not downloadable here; choose one of: {', '.join(DOWNLOADABLE)}")
        self.downloads.start(name)
        return self.dataset_status(name)

    def dataset_status(self, name: str) -> tuple[str, bool]:
        """How the dataset's download goes, for a status line polled while it runs: (Markdown, running)."""
        if name not in DOWNLOADABLE:
            raise ViewError(f"{name!r} is not downloadable here; choose one of: {', '.join(DOWNLOADABLE)}")
        title, state = DOWNLOADABLE[name], self.downloads.state(name)
        folder, files = expected_files(name, self.downloads.data_root)
        if state is None:
            if is_present(name, self.downloads.data_root):
                return f"**{title}** is in the data folder ({folder}): models trained on it open like any other.", False
            return f"**{title}** is not in the data folder yet ({folder}): press **Download** to fetch it.", False
        if state.status == "running":
            got, total = self.downloads.progress(name)
            if got == 0:
                return f"**{title}**: connecting to its download servers…", True
            share = min(got / total, 1.0)
            bar = "▰" * round(20 * share) + "▱" * (20 - round(20 * share))
            return (f"**{title}**: downloading into {folder}: {bar} {got / 1e6:.1f} of about {total / 1e6:.1f} MB "
                    f"({share:.0%})", True)
        if state.status == "ready":
            return (f"**{title}** is ready in {folder}: models trained on it open like any other, and you can "
                    "train on it here.", False)
        return f"**{title}** could not be downloaded. {state.message}", False

    # ---- training in motion ----------------------------------------------------------------

    def training_motion(self, name: str) -> tuple[object, str]:
        """The map of a fixed set of test items after each epoch, as recorded while the model trained: a plotly
        animation (slider over the epochs, play button; `figures.page_animation` readies it for the page) and
        what it shows (Markdown). Needs no dataset: the frames and the items' labels are in the checkpoint."""
        entry = self.load(name)
        return entry.cached("training_motion", lambda: self._training_motion(entry))

    def _motion_record(self, entry: LoadedCheckpoint) -> MotionRecord | None:
        try:
            return MotionRecord.from_tensors(load_motion(entry.path), entry.meta.get("motion"))
        except CheckpointError as e:
            raise ViewError(str(e)) from None

    def _training_motion(self, entry: LoadedCheckpoint) -> tuple[object, str]:
        record = self._motion_record(entry)
        if record is None or not record.frames:
            raise ViewError(f"{entry.name} was trained before the map of its codes was recorded after each epoch "
                            f"(or with motion_items=0): retrain it (Train tab, or `python -m vae_explorer train`) "
                            f"to see its codes move.")
        trained = int(entry.meta.get("epoch", record.epochs[-1]))
        classes = list(entry.meta.get("dataset", {}).get("classes", []))
        fig = figures.training_motion(record.frames, record.epochs, record.labels, classes,
                                      f"{entry.name}: {len(record.items)} test {entry.kind.item}s, epoch by epoch",
                                      record.axis_names, record.items)
        kept = (f"all {len(record.epochs)} epochs" if record.epochs == list(range(1, record.epochs[-1] + 1)) else
                f"{len(record.epochs)} of its {record.epochs[-1]} epochs (the first few, then evenly spaced: "
                + ", ".join(map(str, record.epochs)) + ")")
        how = ("its 2-D codes as they are (z[0], z[1])" if record.projection == "raw" else
               f"the top two principal components of each epoch's {entry.model.latent_dim}-D codes, each frame "
               "turned (a rotation or a mirror image: orthogonal Procrustes) to match the one before, so the "
               "map does not flip or spin between epochs")
        lines = [f"**{entry.name}** ({entry.model.name}, trained {trained} epochs on {entry.dataset_name}): where "
                 f"the same {len(record.items)} test {entry.kind.item}s landed after each epoch, coloured by label; "
                 f"{kept}. The map shows {how}.",
                 "Press **▶ Play** to watch the codes move from epoch " f"{record.epochs[0]} on, or drag the epoch "
                 "slider; the axes stay fixed over all epochs. A VAE's clusters gather around the origin (its KL "
                 "term pulls the codes towards N(0, I)); a plain autoencoder's spread out as far as they like."]
        return fig, "  \n".join(lines)

    def kl_history(self, name: str) -> tuple[object | None, str]:
        """KL to N(0, 1) per latent dimension after each epoch, from the checkpoint's training record: a heat map
        (None for a model without a posterior, or one trained before it was recorded) and a caption."""
        entry = self.load(name)
        rows = [(h["epoch"], h["latent"]["kl_per_dim"]) for h in entry.meta.get("metrics", [])
                if isinstance(h, dict) and isinstance(h.get("latent"), dict) and h["latent"].get("kl_per_dim")]
        # Every epoch of a model with a posterior records its KL (epoch_usage); with nothing recorded, the model is
        # asked (its posterior over the test set) whether it has one at all.
        has_posterior = bool(rows) or self._has_posterior(entry)
        return kl_history_view(entry.name, rows, has_posterior)

    def _has_posterior(self, entry: LoadedCheckpoint) -> bool:
        try:
            return self._usage(entry).kl is not None
        except ViewError:  # its dataset is not here: say what is missing from the record instead
            return True

    # ---- attribute vectors -----------------------------------------------------------------

    ATTRIBUTE_STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)  # the strip's columns

    def attribute_groups(self, name: str) -> list[str]:
        """The labels a group can be chosen by (the data's class names)."""
        return list(self._data(self.load(name)).classes)

    def _group(self, entry: LoadedCheckpoint, label: str, items) -> tuple[np.ndarray, str]:
        """One group of an attribute vector: its test indices (sorted) and its name. `items` (indices as text,
        "3, 17, 40-45", or a list; e.g. points selected on the map) when given, else the items labelled `label`."""
        n = len(self._data(entry).test_x)
        if _given(items):
            chosen = _index_set(items, n)
            return chosen, f"your {len(chosen)} chosen {entry.kind.item}s"
        classes = list(self._data(entry).classes)
        if label not in classes:
            raise ViewError(f"{entry.name}'s test items are labelled {', '.join(classes) or 'by nothing'}; "
                            f"choose two of those groups (or select points on the map), not {label!r}")
        return np.flatnonzero(entry.labels == classes.index(label)), str(label)

    def _attribute(self, entry: LoadedCheckpoint, group_a: str, group_b: str, items_a=None, items_b=None
                   ) -> tuple[AttributeVector, np.ndarray, np.ndarray, str, str]:
        """The attribute vector between two groups (labels or index lists), the groups' indices and names."""
        a, name_a = self._group(entry, group_a, items_a)
        b, name_b = self._group(entry, group_b, items_b)
        for group, name in ((a, name_a), (b, name_b)):
            if not len(group):
                raise ViewError(f"no test {entry.kind.item} is labelled {name}: choose another group")
        if np.array_equal(a, b):
            raise ViewError("choose two different groups: the direction goes from group A's mean code to B's")
        if name_a == name_b:  # two selections of the same size
            name_a, name_b = f"A: {name_a}", f"B: {name_b}"
        vector = entry.cached(("attribute", a.tobytes(), b.tobytes()), lambda: attribute_vector(entry.codes, a, b))
        return vector, a, b, name_a, name_b

    def attribute_view(self, name: str, group_a: str, group_b: str, index=0, items_a=None, items_b=None
                       ) -> tuple[Image.Image, object, str]:
        """The attribute vector from group A's mean code to group B's: a strip of the chosen test item decoded
        at several strengths, the histogram of every code's position along the direction (coloured by group),
        and the numbers (Markdown). A group is the items with a label, or `items_a` / `items_b` when given
        (test indices: points selected on the map)."""
        entry = self.load(name)
        vector, in_a, in_b, group_a, group_b = self._attribute(entry, group_a, group_b, items_a, items_b)
        i = self._index(entry, index)
        z = apply_attribute(entry.codes[i], vector, self.ATTRIBUTE_STRENGTHS)
        kind, item = entry.kind, entry.kind.item
        decoded = entry.decode(torch.as_tensor(z, dtype=torch.float32))
        strip = kind.grid(kind.concat([self._test_items(entry, [i]), decoded]), nrow=len(self.ATTRIBUTE_STRENGTHS) + 1, target=64,
                          labels=[f"test {item} {i}", *(f"{s:+g}" for s in self.ATTRIBUTE_STRENGTHS)])
        values = projections(entry.codes, vector)
        group = np.full(len(values), -1)
        group[in_a] = 0
        group[in_b] = 1  # an item in both groups is drawn with B
        fig = figures.attribute_projection(values, group, (group_a, group_b),
                                           f"{name}: codes along {group_a} → {group_b}", float(values[i]))
        length = float(np.linalg.norm(vector.direction))
        spread = float(np.sqrt(np.mean(np.var(entry.codes, 0)) * entry.codes.shape[1]))
        def members(size, group, items):
            return f"your {size} chosen {item}s" if _given(items) else f"the {size} test {item}s labelled {group}"

        lines = [f"**{group_a} → {group_b}** in {name}'s {entry.model.latent_dim}-D codes: the mean code of "
                 f"{members(vector.size_b, group_b, items_b)} minus that of {members(vector.size_a, group_a, items_a)}"
                 f"; length **{length:.3g}** (the codes' overall spread: {spread:.3g}).",
                 f"Consistency **{vector.consistency:.2f}**: the mean cosine between each individual pair's "
                 f"difference (a B code minus an A code, {vector.pairs:,} pairs) and this direction; "
                 "1 if every pair differs exactly along it, near 0 if the groups differ in unrelated ways.",
                 f"Strip: test {item} {i} (label {self._data(entry).label(i)}), then its code plus s × the "
                 f"direction decoded, s = " + ", ".join(f"{s:g}" for s in self.ATTRIBUTE_STRENGTHS)
                 + f" (s = 1 adds the whole {group_a} → {group_b} difference). Below: every test code's position "
                 f"along the direction; the dashed line is {item} {i}."]
        return strip, fig, "  \n".join(lines)

    def attribute_at(self, name: str, group_a: str, group_b: str, index=0, strength=1.0, items_a=None, items_b=None):
        """The chosen test item's code plus strength × the attribute direction, decoded (the slider's view)."""
        entry = self.load(name)
        vector = self._attribute(entry, group_a, group_b, items_a, items_b)[0]
        s = number_input(strength, "Strength", -3, 3)
        z = apply_attribute(entry.codes[self._index(entry, index)], vector, [s])
        return entry.kind.show(entry.decode(torch.as_tensor(z, dtype=torch.float32))[0], target=160)

    def attribute_map(self, name: str, group_a: str = "", group_b: str = "", items_a=None, items_b=None):
        """The Latent map of the model's test codes for choosing groups by box or lasso selection (plotly's own
        tools; select_points.js reads the selection), with the current groups A and B ringed when they can be
        told (an unknown label rings nothing: the view's message says why)."""
        entry = self.load(name)
        fig = self.latent_map(name, "auto").figure
        xy = np.zeros((len(entry.codes), 2))  # each test item's place on the map
        for trace in fig.data:
            ids = np.asarray(trace.customdata, int)
            xy[ids] = np.column_stack([np.asarray(trace.x, float), np.asarray(trace.y, float)])
        for label, items, ring, colour in ((group_a, items_a, "group A", figures.PALETTE[0]),
                                           (group_b, items_b, "group B", figures.PALETTE[2])):
            try:
                chosen, _ = self._group(entry, label, items)
            except ViewError:
                continue
            fig.add_trace(figures.ring_trace(xy[chosen], chosen, ring, colour))
        fig.update_layout(dragmode="select", meta={"select": "attribute"}, uirevision=None,
                          title=dict(text=f"{name}: select points (box or lasso), then use them as group A or B"))
        return fig

    # ---- export -----------------------------------------------------------------------------

    # The figures the Export view writes: name -> the view's method and which of its outputs is the figure.
    EXPORT_FIGURES = {
        "latent map": ("latent_map", None), "KL per dimension": ("latent_usage", 0),
        "code variance per dimension": ("latent_usage", 1), "prior vs codes: moments": ("prior_fit", 0),
        "prior vs codes: distances": ("prior_fit", 1), "disentanglement: DCI importance": ("disentanglement", 0),
        "linear AE vs PCA: principal angles": ("linear_pca", 0), "codebook usage": ("codebook", 0),
        "training in motion (animation)": ("training_motion", 0), "KL per dimension per epoch": ("kl_history", 0)}

    def _export_folder(self, what: str) -> Path:
        """A fresh folder for one export's files, outside the checkpoints folder (the page downloads them)."""
        # Gradio copies a returned file into its own cache (kept under the app's cap) as it answers: an
        # export's folder is only needed until then, so those of earlier exports go.
        cutoff = time.time() - EXPORT_KEEP_S
        for old in self._exports.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                pass
        return Path(tempfile.mkdtemp(prefix=f"{what}-", dir=self._exports))

    def export_codes(self, name: str) -> tuple[str, str]:
        """The test codes with labels as CSV: (the file's path, a note)."""
        entry = self.load(name)
        data = self._data(entry)
        path = self._export_folder("codes") / f"{entry.name}_codes.csv"
        path.write_text(export.codes_csv(entry.codes, entry.labels, export.label_names(data)))
        d = entry.model.latent_dim
        return str(path), (f"**{path.name}**: {len(entry.codes):,} test {entry.kind.item}s of {entry.dataset_name}, "
                           f"one per line: z0..z{d - 1} ({entry.model.name} `encode`: "
                           f"{'the posterior mean' if self._usage(entry).kl is not None else 'the code'}), the "
                           f"label's index and its name. `np.loadtxt(f, delimiter=',', skiprows=1, "
                           f"usecols=range({d}))` reads the codes back.")

    def export_projector(self, name: str) -> tuple[str, str]:
        """The TensorBoard Embedding Projector's files of the test codes, zipped: (the zip's path, a note)."""
        entry = self.load(name)
        data = self._data(entry)
        pictures = export.thumbnails(data)
        files = export.projector_files(entry.codes, entry.labels, export.label_names(data), pictures, entry.name)
        path = self._export_folder("projector") / f"{entry.name}_projector.zip"
        path.write_bytes(export.zip_files(files, entry.name))
        sprite = ("sprite.png (one thumbnail per code, row by row)" if pictures is not None else
                  f"no sprite ({entry.kind.item}s are not pictures)")
        return str(path), (f"**{path.name}**: tensors.tsv ({len(entry.codes):,} × {entry.model.latent_dim}), "
                           f"metadata.tsv (index, label, label name), {sprite} and projector_config.pbtxt. Unzip it "
                           f"into a TensorBoard log folder (`tensorboard --logdir FOLDER`, Projector tab), or load "
                           f"the two .tsv files at projector.tensorflow.org.")

    def export_bundle(self, name: str) -> tuple[str, str]:
        """The run bundle: the checkpoint, its description and card, its metrics and the command that trains it
        again, zipped: (the zip's path, a note with the command)."""
        entry = self.load(name)
        try:
            files = export.run_bundle(entry.path, self.card(name))
        except (ValueError, OSError) as e:
            raise ViewError(f"{name}: no run bundle ({e})") from None
        path = self._export_folder("bundle") / f"{entry.name}_bundle.zip"
        path.write_bytes(export.zip_files(files, entry.name))
        command = files["command.sh"].decode().strip().splitlines()[-1]
        return str(path), (f"**{path.name}**: {', '.join(files)}. command.sh trains the same model with the "
                           f"settings recorded in the checkpoint:\n\n```\n{command}\n```")

    def export_figure(self, name: str, figure: str) -> tuple[list[str], str]:
        """One of the views' figures of this model as interactive HTML (plotly.js inside: it opens offline) and
        PNG (drawn by kaleido): ([html path, png path], a note)."""
        if figure not in self.EXPORT_FIGURES:
            raise ViewError(f"figures that export: {', '.join(self.EXPORT_FIGURES)}; not {figure!r}")
        method, which = self.EXPORT_FIGURES[figure]
        result = getattr(self, method)(name)
        fig = result.figure if which is None else result[which]
        if fig is None:
            text = result[-1] if isinstance(result, tuple) else ""
            raise ViewError(f"{name} has no {figure} figure. " + str(text).replace("**", "")[:300])
        folder = self._export_folder("figure")
        stem = re.sub(r"[^A-Za-z0-9]+", "_", f"{name} {figure}").strip("_")
        html = folder / f"{stem}.html"
        html.write_text(export.figure_html(fig))
        paths, note = [str(html)], f"**{html.name}**: the interactive figure (plotly.js inside, opens offline)"
        try:
            png = folder / f"{stem}.png"
            png.write_bytes(export.figure_png(fig))
            paths.append(str(png))
            note += f"; **{png.name}**: the same as a picture (drawn by kaleido in a local Chromium)."
        except export.ExportError as e:
            note += f". No PNG: {e}."
        return paths, note

    # ---- 8. train ------------------------------------------------------------------------

    def model_settings(self, model: str) -> dict[str, object]:
        """The settings a registry model has, with its preset's values (the Train tab shows these)."""
        try:
            entry = model_entry(model)
        except ValueError as e:
            raise ViewError(str(e)) from None
        return {name: getattr(entry.preset, name) for name in entry.settings()}

    def keep_table(self, upload) -> str:
        """Copy an uploaded table into the checkpoints folder's tables/ (named by its contents), where the
        checkpoints trained on it find it again; returns the kept path."""
        if not upload:
            raise ViewError("the csv dataset trains on a table you upload: choose a CSV or Parquet file first")
        source = Path(upload)
        try:
            size = source.stat().st_size
            if size > MAX_TABLE_UPLOAD:
                raise ViewError(f"{source.name}: {size / 2**20:.1f} MB is over the {MAX_TABLE_UPLOAD // 2**20} MB "
                                "limit for tables uploaded here (train bigger ones with the CLI)")
            digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        except OSError:
            raise ViewError(f"{source.name}: the upload could not be read") from None
        folder = self.catalog.root / TABLES_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", source.stem)[:40] or "table"
        kept = folder / f"{stem}-{digest}{source.suffix.lower() if source.suffix.lower() in TABLE_SUFFIXES else '.csv'}"
        if not kept.exists():
            shutil.copyfile(source, kept)
        return str(kept)

    def train_start(self, model: str = "vae", dataset: str = "digits", name: str = "", extra: str = "",
                    table_file=None, **settings) -> str:
        """Start a background run. settings: values of model, data and training fields by name (the Train
        tab's widgets; None = not given); extra: more of them as 'name=value' lines; table_file: an uploaded
        table for the csv dataset. The CLI's checks."""
        if table_file or (DATASETS.get(dataset) and DATASETS[dataset].needs_file and not settings.get("data_file")):
            settings["data_file"] = self.keep_table(table_file)
        try:
            named = {**{k: v for k, v in settings.items() if v is not None}, **parse_settings(extra)}
            model_settings, data_fields, train_fields = split_settings(named)
            spec = RunSpec(model, model_settings, replace(DataSpec(), dataset=dataset, **data_fields),
                           replace(TrainConfig(), **train_fields))
            job = self.jobs.start(spec, name)
        except (RunError, JobError) as e:
            raise ViewError(str(e)) from None
        return (f"Started **{job.name}**: {job.spec.model} on {job.spec.data.dataset}, "
                f"{job.spec.train.epochs} epochs.")

    def train_cancel(self) -> str:
        job = self.jobs.cancel()
        if job is None:
            return "No training has been started."
        return f"**{job.name}**: {job.message or job.status}"

    def train_running(self) -> bool:
        return self.jobs.current is not None and self.jobs.current.running

    def train_version(self) -> tuple:
        """Changes whenever the training job has something new to show (cheap: for polling)."""
        job = self.jobs.current
        return () if job is None else (job.started, job.version, job.status)

    def train_views_version(self) -> tuple:
        """Changes whenever `train_views` would show something new: an epoch ended, or the run did (cheap)."""
        job = self.jobs.current
        if job is None:
            return ()
        return (job.started, job.epochs_done(), job.status)

    def train_views(self) -> tuple[object | None, str, object | None, str]:
        """The current (or last) training's map of its fixed test items and its KL per dimension per epoch:
        (map figure or None, its caption, KL heat map or None, its caption). While it runs the map is the newest
        epoch's; once it has ended, the checkpoint's animation over every kept epoch (`training_motion`)."""
        job = self.jobs.current
        if job is None:
            return None, "", None, ""
        snap = job.snapshot()
        first, epochs = snap["first"], snap["epochs"]
        framed = [e for e in epochs if e.motion]
        figure, caption = None, ""
        if snap["status"] in ("finished", "cancelled") and framed and job.checkpoint.is_file():
            try:
                figure, caption = self.training_motion(snap["name"])
            except ViewError:
                pass  # the file went; the newest frame below still shows
        if figure is None and framed and first is not None and first.motion:
            newest, info = framed[-1], first.motion
            figure = figures.training_motion(
                [np.asarray(newest.motion["points"], np.float64)], [newest.epoch], np.asarray(info["labels"]),
                list(info["classes"]), f"{snap['name']}: epoch {newest.epoch} of {newest.epochs}",
                tuple(info["axes"]))
            caption = (f"Where {len(info['labels'])} fixed test items land after the newest epoch "
                       f"({'raw 2-D codes' if info['projection'] == 'raw' else 'PCA of the codes'}), updated after "
                       "each epoch; when the run ends, play every epoch here or in Diagnostics → Training in motion.")
        elif figure is None and snap["status"] in ("starting", "running") and first is not None and first.motion:
            caption = "The map of a fixed set of test items appears after the first epoch."
        rows = [(e.epoch, e.latent["kl_per_dim"]) for e in epochs if e.latent and e.latent.get("kl_per_dim")]
        if rows or epochs:
            kl_figure, kl_caption = kl_history_view(snap["name"], rows, bool(rows))
        else:
            kl_figure, kl_caption = None, ""
        return figure, caption, kl_figure, kl_caption

    def train_status(self) -> tuple[str, object, Image.Image | None, bool]:
        """(progress Markdown, loss-curve figure, reconstruction history, still running)."""
        job = self.jobs.current
        if job is None:
            return ("No training yet. Choose settings and press **Start training**.",
                    figures.loss_curves([], []), None, False)
        snap = job.snapshot()
        p, spec = snap["latest"], snap["spec"]
        config, kind = spec.model_config(), DATASETS[spec.data.dataset].kind
        lines = [f"**{snap['name']}**: {spec.model} on {spec.data.dataset}, latent {config.latent_dim}; "
                 f"status **{snap['status']}**" + (f" on **{snap['device']}**" if snap["device"] else "")]
        if p is not None:
            eta = snap["eta"]
            lines.append(f"epoch {p.epoch}/{p.epochs}, step {p.step}/{p.steps_per_epoch}, "
                         f"{p.images_per_s:,.0f} {kind.item}s/s, {p.elapsed:.1f} s elapsed"
                         + (f", about {eta:.0f} s left" if eta is not None and snap["status"] == "running" else ""))
        elif snap["status"] == "starting":
            lines.append("starting the training process (loading torch and the data)…")
        if snap["epochs"]:
            last = snap["epochs"][-1].test
            lines.append("last test metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                                                           if isinstance(v, float)))
        if snap["message"]:
            lines.append(snap["message"])
        if snap["status"] == "finished":
            lines.append(f"Saved as checkpoint **{snap['name']}**: it is in every model picker now.")
        fig = figures.loss_curves([(e.epoch - 1 + e.step / max(e.steps_per_epoch, 1), e.train) for e in snap["steps"]],
                                  [(e.epoch, e.test) for e in snap["epochs"]])
        history = None
        first = snap["first"]
        if kind.shown_as == "image" and first is not None and first.items is not None and len(first.items):
            rows = [first.items] + [e.items for e in snap["epochs"][-7:]]  # the inputs, then the last epochs'
            history = kind.grid(kind.prepare(torch.cat(rows)), nrow=len(first.items), target=40)
        return "  \n".join(lines), fig, history, job.running


def kl_history_view(name: str, rows: list[tuple[int, list[float]]], has_posterior: bool) -> tuple[object | None, str]:
    """The KL-per-dimension-per-epoch heat map of `rows` [(epoch, KL per dimension)], or None and why not."""
    if not has_posterior:
        return None, (f"{name} has no posterior q(z|x), so no KL to the prior per dimension (VAEs have one; their "
                      "heat map shows which latent dimensions wake up, epoch by epoch).")
    if not rows:
        return None, f"{name}: no KL per dimension was recorded while it trained (trained before it was recorded)."
    epochs = [e for e, _ in rows]
    kl = np.array([values for _, values in rows], np.float64)
    last = kl[-1]
    top = np.argsort(-last)[:3]
    caption = (f"KL to N(0, 1) per latent dimension after each epoch (test mean, nats): a dark row is a dimension "
               f"the model does not use. After epoch {epochs[-1]}: total {last.sum():.3g} nats; most used "
               + ", ".join(f"z[{i}] {last[i]:.3g}" for i in top) + ".")
    return figures.kl_per_epoch(epochs, kl, f"{name}: KL per dimension, epoch by epoch"), caption


def number_input(value, what: str, minimum: float | None = None, maximum: float | None = None,
                 whole: bool = False) -> int | float:
    """A number widget's value as a raw API client may send it: an int or a finite float within the bounds,
    returned as it came; anything else (text, a list, null, true, NaN, ±Infinity, 1e400, 2^70 past a bound)
    is a ViewError naming the widget and what it takes. The page itself only ever sends valid numbers."""
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and \
        (isinstance(value, int) or math.isfinite(value))
    if not number or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        span = (f" from {minimum:g} to {maximum:g}" if minimum is not None and maximum is not None else
                f" of at least {minimum:g}" if minimum is not None else
                f" of at most {maximum:g}" if maximum is not None else "")
        raise ViewError(f"{what or 'this field'} must be {'a whole number' if whole else 'a number'}{span}, "
                        f"got {_shown(value)}")
    return value


def _shown(value) -> str:
    """A value in the words a JSON client used (NaN, Infinity, null, true, "text"), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _delaunay(points: np.ndarray):
    """Delaunay triangles of (N, 2) map points: find_simplex < 0 is outside their convex hull."""
    from scipy.spatial import Delaunay

    return Delaunay(np.asarray(points, np.float64))


def _number(value, what: str) -> float:
    """A finite number from the page or a raw client, or a ViewError that says so."""
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ViewError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(out):
        raise ViewError(f"{what} must be a finite number, got {value!r}")
    return out


def _seed(value) -> int:
    """A seed: a whole number from 0 to 2^32 - 1."""
    number = _number(value if value not in (None, "") else 0, "the seed")
    if not number.is_integer() or not 0 <= number < 2**32:
        raise ViewError(f"the seed must be a whole number from 0 to {2**32 - 1}, got {value!r}")
    return int(number)


def _png_bytes(drawing) -> bytes:
    """The sketchpad's drawing, a `data:image/png;base64,...` URL (or raw bytes), as PNG bytes."""
    import base64
    import binascii

    if isinstance(drawing, (bytes, bytearray)):
        return bytes(drawing)
    if not isinstance(drawing, str) or not drawing.strip():
        raise ViewError("draw something first, or upload an image")
    head, _, body = drawing.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise ViewError("the drawing must be an image as a base64 data URL (data:image/png;base64,...)")
    if len(body) > MAX_DRAWING_CHARS:
        raise ViewError(f"the drawing is over the {MAX_DRAWING_CHARS * 3 // 4 // 2**20} MB limit")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ViewError("the drawing's data URL is not valid base64") from None


def _given(items) -> bool:
    """A group's items were given (not None, not empty text, not an empty list)."""
    return items is not None and str(items).strip() not in ("", "[]")


def _index_set(items, n: int) -> np.ndarray:
    """Test indices from text ("3, 17, 40-45", spaces or commas; a JSON list too) or a list, checked against the
    test set's n items; sorted, each once. No cap: a selection on the map may hold thousands."""
    if isinstance(items, str):
        text = items.strip().lstrip("[").rstrip("]")
        out = []
        for part in re.split(r"[,;\s]+", text):
            if not part:
                continue
            bounds = part.split("-", 1) if "-" in part[1:] else [part]
            if not all(b.isdigit() for b in bounds):
                raise ViewError(f"{part!r} is not a test index; write indices like 0, 5, 10-13")
            out.extend(range(int(bounds[0]), int(bounds[-1]) + 1))
    else:
        try:
            out = [int(i) for i in items]
        except (TypeError, ValueError):
            raise ViewError("a group's items must be test indices like 0, 5, 10-13") from None
    if not len(out):
        raise ViewError("a group's items: no test index given; write indices like 0, 5, 10-13, or leave it empty")
    chosen = np.unique(np.asarray(out, np.int64))
    bad = chosen[(chosen < 0) | (chosen >= n)]
    if len(bad):
        raise ViewError(f"indices {bad[:5].tolist()} are out of range: the test set has items 0 to {n - 1}")
    return chosen


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
            raise ViewError(f"{part!r} is not an index; write indices like 0, 5, 10-13")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ViewError(f"indices {bad[:5]} are out of range: the test set has items 0 to {n - 1}")
    if not out:
        raise ViewError("no indices given")
    if len(out) > 32:
        raise ViewError("at most 32 items at once")
    return out

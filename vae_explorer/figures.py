"""Plotly figures for the explorer: latent maps, loss curves, error histograms.
Each takes plain arrays and returns a `go.Figure`; nothing here knows about Gradio."""
from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import plotly.graph_objects as go

# Ten distinguishable colours (Tableau 10), one per class; more classes cycle.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(_layout_settings(title, height, "plotly_white"))
    return fig


def _layout_settings(title: str, height: int, template) -> dict:
    return dict(title=dict(text=title, x=0.02, font=dict(size=14)), height=height,
                margin=dict(l=40, r=10, t=40, b=35), template=template,
                legend=dict(itemsizing="constant", font=dict(size=10)))


_WHITE: dict | None = None
# Spelled out as validation would spell "Viridis" (unvalidated figures keep what they are given).
_VIRIDIS = [[i / 9, c] for i, c in enumerate(["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89",
                                               "#35b779", "#6ece58", "#b5de2b", "#fde725"])]


def _white() -> dict:
    """plotly_white as a plain dict, made once: naming the template makes plotly copy and validate all of it
    for every figure (a third of a latent map's cost)."""
    global _WHITE
    if _WHITE is None:
        import plotly.io as pio

        _WHITE = pio.templates["plotly_white"].to_plotly_json()
    return _WHITE


def unvalidated_figure(data: list[dict], layout: dict) -> go.Figure:
    """A figure from plain trace and layout dicts, without plotly's per-property validation: 1 ms instead of
    30 for a latent map of eleven traces, which is drawn again for every model, projection, colouring or
    item chosen (under a class's load it was a quarter of the server's time). What validation would say
    about these dicts is checked in the tests, which build the same figures validated."""
    return go.Figure({"data": data, "layout": layout}, _validate=False)


# Plotly's typed arrays (plotly.js decodes them from base64): numpy's dtype names to plotly.js's.
_TYPED = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
          "float32": "f4", "float64": "f8"}
_UNTYPED_KEYS = {"geojson", "layer", "layers", "range"}  # plotly leaves these as they are


def figure_json(fig: go.Figure) -> str:
    """`fig.to_json()`, the same JSON, made without what makes plotly's slow for large figures: it deep-copies
    the whole figure, then passes every array through narwhals on its way to a typed array. For a
    10,000-point map that was 14 of the 19 ms the server spent on it, on every map answered. The tests compare
    this with `to_json` on every kind of figure the app draws."""
    from plotly.io.json import to_json_plotly

    res = {"data": [_typed_arrays(t) for t in fig._data], "layout": _typed_arrays(fig._layout)}
    frames = [_typed_arrays(frame._props) for frame in fig._frame_objs]
    if frames:
        res["frames"] = frames
    return to_json_plotly(res)


def _typed_arrays(value):
    """A copy of `value` (dicts and lists copied, leaves shared) with each array that is a dict's value as
    plotly's `convert_to_base64` leaves it: numpy arrays typed here, other array-likes (pandas) by plotly. An
    array that is a list's item stays an array, there as here."""
    if isinstance(value, dict):
        return {k: v if k in _UNTYPED_KEYS else _typed_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_typed_arrays(v) for v in value]
    return value


def _typed_value(v):
    if isinstance(v, np.ndarray):
        return _typed_array(v)
    if v is None or isinstance(v, (str, int, float, dict, list, tuple)):
        return _typed_arrays(v)
    from _plotly_utils.basevalidators import is_homogeneous_array
    from _plotly_utils.utils import to_typed_array_spec

    return to_typed_array_spec(v) if is_homogeneous_array(v) else v


def _typed_array(v: np.ndarray):
    if v.size == 0:
        return v
    if v.dtype in (np.int64, np.uint64):  # plotly.js has no 64-bit integers: the narrowest type that holds them
        lo, hi = v.min(), v.max()
        for narrow in ((np.int8, np.int16, np.int32) if v.dtype == np.int64 else (np.uint8, np.uint16, np.uint32)):
            info = np.iinfo(narrow)
            if info.min <= lo and hi <= info.max:
                v = v.astype(narrow)
                break
        else:
            return v
    short = _TYPED.get(str(v.dtype))
    if short is None:
        return v
    spec = {"dtype": short, "bdata": base64.b64encode(np.ascontiguousarray(v)).decode("ascii")}
    if v.ndim > 1:
        spec["shape"] = str(v.shape)[1:-1]
    return spec


def latent_map(points: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
               axis_names: tuple[str, str] = ("z[0]", "z[1]"), selected: int | None = None,
               height: int = 430, values: np.ndarray | None = None, value_name: str | None = None) -> go.Figure:
    """Scatter of (N, 2) points coloured by label, WebGL so 10,000+ points stay responsive; or, given
    `values` (N,), one trace coloured on a continuous scale (an anomaly score, a table's column).

    Every point carries its test-set index as `customdata`: hover shows it, and the
    page's click bridge sends it back to select the point.
    """
    labels = np.asarray(labels)
    index = np.arange(len(points))
    traces = []
    if values is not None:
        values = np.asarray(values, np.float64)
        traces.append(dict(
            type="scattergl", x=points[:, 0], y=points[:, 1], mode="markers", name=value_name, customdata=index,
            marker=dict(size=5, opacity=0.8, color=values, colorscale=_VIRIDIS, showscale=True,
                        colorbar=dict(title=dict(text=value_name, side="right"), thickness=12)),
            text=[f"{v:.4g}" for v in values],
            hovertemplate=f"index %{{customdata}}<br>{value_name} %{{text}}<extra></extra>",
        ))
    for i, label in enumerate(np.unique(labels) if values is None else []):
        mask = labels == label
        name = classes[label] if 0 <= label < len(classes) else ("unlabelled" if label < 0 else str(label))
        traces.append(dict(
            type="scattergl", x=points[mask, 0], y=points[mask, 1], mode="markers", name=name,
            customdata=index[mask], marker=dict(size=5, opacity=0.75, color=PALETTE[i % len(PALETTE)]),
            hovertemplate=f"index %{{customdata}}<br>label {name}<extra></extra>",
        ))
    if selected is not None and 0 <= selected < len(points):
        traces.append(dict(
            type="scattergl", x=[float(points[selected, 0])], y=[float(points[selected, 1])], mode="markers",
            name="selected", customdata=[selected], marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(width=3, color="black")),
            hovertemplate="selected: index %{customdata}<extra></extra>",
        ))
    layout = dict(_layout_settings(title, height, _white()), xaxis=dict(title=dict(text=axis_names[0]), zeroline=False),
                  yaxis=dict(title=dict(text=axis_names[1]), zeroline=False), clickmode="event",
                  hovermode="closest", uirevision=title)
    return unvalidated_figure(traces, layout)


def loss_curves(train: list[tuple[float, dict]], test: list[tuple[int, dict]],
                title: str = "Loss per term (nats per item)") -> go.Figure:
    """Training curves: `train` [(epochs done, {term: value})], `test` [(epoch, {term: value})].
    One colour per term; train solid, test dotted with markers. Built unvalidated (`unvalidated_figure`):
    every open Train tab redraws it as a run progresses, and with validation a run of 300 steps took 50 ms."""
    traces = []
    terms = list(train[-1][1]) if train else []
    for i, term in enumerate(terms):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(x, values[term]) for x, values in train if term in values]
        if pts:
            xs, ys = zip(*pts)
            traces.append(dict(type="scatter", x=list(xs), y=list(ys), mode="lines", name=f"train {term}",
                               line=dict(color=colour)))
        tpts = [(epoch, values[term]) for epoch, values in test if term in values]
        if tpts:
            xs, ys = zip(*tpts)
            traces.append(dict(type="scatter", x=list(xs), y=list(ys), mode="lines+markers", name=f"test {term}",
                               line=dict(color=colour, dash="dot")))
    layout = dict(_layout_settings(title, 360, _white()), xaxis=dict(title=dict(text="epoch")))
    values = [y for trace in traces for y in trace["y"]]
    if values and min(values) > 0:
        layout["yaxis"] = dict(type="log", dtick=1)  # a label per power of ten: readable at a glance
    active = [(epoch, values["active_units"]) for epoch, values in test if "active_units" in values]
    if active:  # models with a posterior: how many latent dimensions are in use, in a panel of its own
        xs, ys = zip(*active)
        traces.append(dict(type="scatter", x=list(xs), y=list(ys), mode="lines+markers", name="active units (test)",
                           xaxis="x2", yaxis="y2", line=dict(color="black")))
        layout["xaxis"]["domain"] = [0, 0.62]
        layout["xaxis2"] = dict(domain=[0.74, 1], anchor="y2", title=dict(text="epoch"))
        layout["yaxis2"] = dict(anchor="x2", title=dict(text="active units"), rangemode="tozero",
                                **({"dtick": 1} if max(ys) <= 10 else {}))
    return unvalidated_figure(traces, layout)


def error_histogram(errors: np.ndarray, threshold: float, title: str,
                    x_title: str = "reconstruction error") -> go.Figure:
    """Histogram of per-item reconstruction errors with the anomaly threshold marked."""
    above = int((errors > threshold).sum())
    fig = go.Figure(go.Histogram(x=errors, nbinsx=60, marker_color=PALETTE[0], name="test items",
                                 hovertemplate="error %{x}<br>%{y} items<extra></extra>"))
    fig.add_vline(x=threshold, line=dict(color=PALETTE[2], width=2, dash="dash"),
                  annotation_text=f"threshold: {above} of {len(errors)} above", annotation_position="top right")
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="items")
    fig.update_layout(showlegend=False, bargap=0.02)
    return _layout(fig, title, 320)


def detection_curves(roc: tuple[np.ndarray, np.ndarray], pr: tuple[np.ndarray, np.ndarray], auroc: float, ap: float,
                     title: str) -> go.Figure:
    """ROC (false- vs true-positive rate) and precision-recall curves side by side, with chance marked."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"ROC, AUROC {auroc:.3f}", f"Precision-recall, AP {ap:.3f}"))
    fig.add_trace(go.Scatter(x=roc[0], y=roc[1], mode="lines", name="ROC", line=dict(color=PALETTE[0])), 1, 1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color=PALETTE[9], dash="dot")),
                  1, 1)
    fig.add_trace(go.Scatter(x=pr[0], y=pr[1], mode="lines", name="PR", line=dict(color=PALETTE[2])), 1, 2)
    fig.update_xaxes(title_text="false-positive rate", row=1, col=1)
    fig.update_yaxes(title_text="true-positive rate", row=1, col=1)
    fig.update_xaxes(title_text="recall", row=1, col=2)
    fig.update_yaxes(title_text="precision", row=1, col=2)
    fig.update_layout(showlegend=False)
    return _layout(fig, title, 340)


def column_distributions(real, synthetic: dict, title: str, max_columns: int = 12) -> go.Figure:
    """Each column's distribution in real rows and in each set of synthetic rows (pandas frames with the same
    columns): histograms for numbers, bar charts of category shares for categories."""
    from plotly.subplots import make_subplots

    columns = list(real.columns)[:max_columns]
    ncol = min(4, len(columns))
    nrow = -(-len(columns) // ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=columns)
    sets = [("real", real), *synthetic.items()]
    for j, column in enumerate(columns):
        r, c = divmod(j, ncol)
        for i, (label, frame) in enumerate(sets):
            values = frame[column]
            if np.issubdtype(np.asarray(real[column]).dtype, np.number):
                trace = go.Histogram(x=values, histnorm="probability", opacity=0.55, nbinsx=30)
            else:  # decoded categories read "name (p%)": count the names
                names = values.astype(str).str.replace(r" \(\d+%\)$", "", regex=True)
                share = names.value_counts(normalize=True)
                trace = go.Bar(x=share.index.tolist(), y=share.to_numpy(), opacity=0.55)
            trace.update(name=label, legendgroup=label, showlegend=j == 0, marker_color=PALETTE[i % len(PALETTE)])
            fig.add_trace(trace, r + 1, c + 1)
    fig.update_layout(barmode="overlay")
    return _layout(fig, title, 220 * nrow + 60)


def latent_usage(values: np.ndarray, active: np.ndarray, title: str, y_title: str,
                 threshold: float | None = None) -> go.Figure:
    """One bar per latent dimension (KL or variance), active ones coloured, dead ones grey."""
    labels = [f"z[{i}]" for i in range(len(values))]
    colours = [PALETTE[0] if a else PALETTE[9] for a in active]
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color=colours,
                           hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    if threshold is not None:
        fig.add_hline(y=threshold, line=dict(color=PALETTE[2], width=1.5, dash="dash"),
                      annotation_text="active above", annotation_position="top left")
    fig.update_xaxes(title_text="latent dimension")
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(showlegend=False, bargap=0.15)
    return _layout(fig, title, 320)


def code_moments(mean: np.ndarray, std: np.ndarray, title: str, mean_std: np.ndarray | None = None) -> go.Figure:
    """Per latent dimension, the codes' mean with ±1 std as error bars, against N(0, 1): a grey band from -1
    to 1 around a line at 0. `mean_std`: the posterior means' own std, drawn as thinner inner bars."""
    labels = [f"z[{i}]" for i in range(len(mean))]
    fig = go.Figure()
    fig.add_hrect(y0=-1, y1=1, fillcolor=PALETTE[9], opacity=0.25, line_width=0, layer="below")
    fig.add_hline(y=0, line=dict(color=PALETTE[9], width=1.5))
    fig.add_trace(go.Scatter(x=labels, y=mean, mode="markers", name="codes: mean ± std",
                             marker=dict(size=9, color=PALETTE[0]),
                             error_y=dict(type="data", array=std, thickness=2, width=6, color=PALETTE[0]),
                             customdata=np.stack([std], 1),
                             hovertemplate="%{x}: mean %{y:.3g}, std %{customdata[0]:.3g}<extra></extra>"))
    if mean_std is not None:
        fig.add_trace(go.Scatter(x=labels, y=mean, mode="markers", name="posterior means alone: ± std",
                                 marker=dict(size=1, color=PALETTE[1]),
                                 error_y=dict(type="data", array=mean_std, thickness=5, width=0, color=PALETTE[1]),
                                 hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="N(0, 1): 0 ± 1",
                             line=dict(color=PALETTE[9], width=8)))
    fig.update_xaxes(title_text="latent dimension")
    # At least ±1.6, so N(0, 1)'s band shows as a band even when the codes fill it exactly.
    lo, hi = float(np.min(mean - std)), float(np.max(mean + std))
    pad = 0.08 * (hi - lo)
    fig.update_yaxes(title_text="code value", range=[min(-1.6, lo - pad), max(1.6, hi + pad)])
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, title, 340)


def distance_histograms(from_prior: np.ndarray, between: np.ndarray, title: str) -> go.Figure:
    """Overlaid histograms of two sets of nearest-neighbour distances: prior samples to the nearest code, and
    codes to the nearest other code, with each median marked."""
    fig = go.Figure()
    # Binned here, not by plotly: raw values would send every distance (10,000s per trace on MNIST) to the page.
    edges = distance_bins(from_prior, between)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    for values, name, colour in ((between, "test code → nearest other test code", PALETTE[0]),
                                 (from_prior, "N(0, I) sample → nearest test code", PALETTE[2])):
        share = np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0] / max(len(values), 1)
        fig.add_trace(go.Bar(x=centres, y=share, width=width, name=name, opacity=0.6, marker_color=colour,
                             hovertemplate="distance %{x:.3g}<br>%{y:.1%}<extra></extra>"))
        fig.add_vline(x=float(np.median(values)), line=dict(color=colour, width=2, dash="dash"))
    fig.update_xaxes(title_text="distance to the nearest test code (dashed: medians)")
    fig.update_yaxes(title_text="share", tickformat=".0%")
    fig.update_layout(barmode="overlay", bargap=0, legend=dict(orientation="h", y=-0.3))
    return _layout(fig, title, 340)


def distance_bins(*values: np.ndarray, bins: int = 40) -> np.ndarray:
    """(bins + 1,) equal-width edges from 0 to the 99.5th percentile of all `values` (the rare far ones fall in
    the last bin)."""
    hi = float(np.percentile(np.concatenate(values), 99.5)) if sum(len(v) for v in values) else 1.0
    return np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)


def importance_heatmap(importance: np.ndarray, factor_names: list[str], title: str) -> go.Figure:
    """DCI's importance matrix: rows are latent dimensions, columns are factors, each cell how much the dimension
    serves to predict the factor (each column sums to 1)."""
    importance = np.asarray(importance, np.float64)
    dims = [f"z[{i}]" for i in range(len(importance))]
    fig = go.Figure(go.Heatmap(z=importance, x=list(factor_names), y=dims, colorscale="Blues", zmin=0, zmax=1,
                               text=[[f"{v:.2f}" for v in row] for row in importance], texttemplate="%{text}",
                               hovertemplate="%{y} predicting %{x}: %{z:.3f}<extra></extra>",
                               colorbar=dict(title=dict(text="importance", side="right"), thickness=12)))
    fig.update_yaxes(autorange="reversed", title_text="latent dimension")
    fig.update_xaxes(side="top")  # factor names on top, under the title: the columns read like a table's head
    fig = _layout(fig, title, max(260, 28 * len(dims) + 130))
    fig.update_layout(margin=dict(t=80))
    return fig


def principal_angles(degrees: np.ndarray, random_degrees: np.ndarray, title: str) -> go.Figure:
    """The principal angles between two subspaces (smallest first), beside those of a random subspace of the
    same size, in degrees: 0° is the same direction, 90° perpendicular."""
    labels = [f"angle {i + 1}" for i in range(len(degrees))]
    fig = go.Figure([
        go.Bar(x=labels, y=degrees, name="linear AE's decoder vs PCA", marker_color=PALETTE[0],
               text=[f"{v:.2f}°" for v in degrees], textposition="outside",
               hovertemplate="%{x}: %{y:.4f}°<extra></extra>"),
        go.Bar(x=labels, y=random_degrees, name="a random subspace vs PCA (for scale)", marker_color=PALETTE[9],
               text=[f"{v:.0f}°" for v in random_degrees], textposition="outside",
               hovertemplate="%{x}: %{y:.2f}°<extra></extra>"),
    ])
    fig.update_yaxes(title_text="degrees", range=[0, 100], dtick=15)
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2))
    return _layout(fig, title, 340)


def codebook_grid(pictures: list[str], counts: np.ndarray, title: str, chosen: int | None = None,
                  columns: int = 8) -> go.Figure:
    """One cell per code, in index order, `columns` per row: the code's decoded picture (`pictures`, PNG data
    URLs) with its side proportional to sqrt(its share of the most used code's count), so area follows usage;
    dead codes (count 0) as a red ×. Hover names the code and its count; `customdata` is the code index."""
    counts = np.asarray(counts, np.int64)
    k = len(counts)
    rows = -(-k // columns)
    col, row = np.arange(k) % columns, np.arange(k) // columns
    side = 0.95 * np.sqrt(counts / max(int(counts.max()), 1))
    fig = go.Figure()
    # All images in one layout update: add_layout_image re-validates every earlier image at each call (3.5 s
    # for 64 codes here, against milliseconds).
    fig.update_layout(images=[
        dict(source=url, x=int(col[i]), y=-int(row[i]), sizex=max(float(s), 0.08), sizey=max(float(s), 0.08),
             xanchor="center", yanchor="middle", xref="x", yref="y", layer="above", sizing="stretch")
        for i, (url, s) in enumerate(zip(pictures, side)) if counts[i] > 0])
    dead = counts == 0
    share = counts / max(int(counts.sum()), 1)
    fig.add_trace(go.Scatter(
        x=col, y=-row, mode="markers", customdata=np.arange(k), name="codes",
        marker=dict(size=28, opacity=0.0 if not dead.any() else [0.9 if d else 0.0 for d in dead],
                    symbol="x", color="#e15759"),
        text=[f"{c:,} uses ({p:.1%})" if c else "dead: never used" for c, p in zip(counts, share)],
        hovertemplate="code %{customdata}<br>%{text}<extra></extra>", showlegend=False))
    if chosen is not None and 0 <= chosen < k:
        fig.add_shape(type="rect", x0=col[chosen] - 0.5, x1=col[chosen] + 0.5, y0=-row[chosen] - 0.5,
                      y1=-row[chosen] + 0.5, line=dict(color="#f28e2b", width=3))
    fig.update_xaxes(range=[-0.6, columns - 0.4], tickvals=list(range(columns)), showgrid=False, zeroline=False)
    fig.update_yaxes(range=[-rows + 0.4, 0.6], tickvals=[-r for r in range(rows)],
                     ticktext=[str(r * columns) for r in range(rows)], showgrid=False, zeroline=False,
                     scaleanchor="x")
    fig.update_layout(plot_bgcolor="#f4f4f4")
    return _layout(fig, title, 60 * rows + 90)


def ring_trace(points: np.ndarray, index: np.ndarray, name: str, colour: str) -> go.Scattergl:
    """Open rings around (N, 2) points of a map (a chosen group), each with its test index as customdata."""
    return go.Scattergl(x=points[:, 0], y=points[:, 1], mode="markers", name=f"{name} ({len(index)})",
                        customdata=np.asarray(index), marker=dict(size=11, color="rgba(0,0,0,0)",
                                                                  line=dict(width=1.5, color=colour)),
                        hovertemplate=f"{name}: index %{{customdata}}<extra></extra>")


def attribute_projection(values: np.ndarray, group: np.ndarray, names: tuple[str, str], title: str,
                         marked: float | None = None) -> go.Figure:
    """Histograms of every code's coordinate along an attribute direction: group A (group == 0), group B
    (group == 1) and the other items (group == -1, grey), overlaid; `marked`: the chosen item's position."""
    fig = go.Figure()
    bins = dict(start=float(values.min()), end=float(values.max()) + 1e-9,
                size=max(float(values.max() - values.min()) / 50, 1e-9))
    for g, name, colour in ((-1, "other items", "#bab0ac"), (0, names[0], PALETTE[0]), (1, names[1], PALETTE[2])):
        chosen = values[group == g]
        if len(chosen):
            fig.add_trace(go.Histogram(x=chosen, xbins=bins, name=f"{name} ({len(chosen)})", marker_color=colour,
                                       opacity=0.75))
    if marked is not None:
        fig.add_vline(x=marked, line=dict(color="black", width=2, dash="dash"), annotation_text="chosen item",
                      annotation_position="top")
    fig.update_layout(barmode="overlay", bargap=0.02)
    fig.update_xaxes(title_text="position along the direction (z · unit vector)")
    fig.update_yaxes(title_text="items")
    return _layout(fig, title, 320)


def _rounded(values: np.ndarray, span: float) -> list[float]:
    """Values as a list, rounded to about 1/10,000 of `span`: what a screen can show, and a smaller page."""
    digits = max(0, 4 - int(np.floor(np.log10(max(span, 1e-12)))))
    return np.round(np.asarray(values, np.float64), digits).tolist()


def training_motion(frames: list[np.ndarray], epochs: list[int], labels: np.ndarray, classes: list[str], title: str,
                    axis_names: tuple[str, str] = ("z[0]", "z[1]"), items: np.ndarray | None = None) -> go.Figure:
    """The map of the same items after each epoch: `frames[i]` (N, 2) after epoch `epochs[i]`, one trace per
    label. With more than one frame, a plotly animation: one frame per epoch, a slider over the epochs and a
    play button, axis ranges fixed over all frames (so the motion shows, not the zoom), and the figure opens
    at the last epoch. SVG markers, not WebGL: plotly moves SVG points smoothly between frames.
    `items`: each point's test index, shown on hover."""
    labels = np.asarray(labels)
    items = np.arange(len(labels)) if items is None else np.asarray(items)
    stacked = np.stack([np.asarray(f, np.float64) for f in frames])  # (F, N, 2)
    low, high = stacked.min(axis=(0, 1)), stacked.max(axis=(0, 1))
    pad = np.maximum((high - low) * 0.05, 1e-3)
    low, high = low - pad, high + pad
    span = float(np.max(high - low))
    groups = []
    for i, label in enumerate(np.unique(labels)):
        name = classes[label] if 0 <= label < len(classes) else ("unlabelled" if label < 0 else str(label))
        groups.append((labels == label, name, PALETTE[i % len(PALETTE)]))

    def traces(frame):
        return [go.Scatter(x=_rounded(frame[mask, 0], span), y=_rounded(frame[mask, 1], span)) for mask, _, _ in groups]

    fig = go.Figure()
    for (mask, name, colour), trace in zip(groups, traces(stacked[-1])):
        trace.update(mode="markers", name=name, customdata=items[mask].tolist(),
                     marker=dict(size=6, opacity=0.8, color=colour),
                     hovertemplate=f"test item %{{customdata}}<br>label {name}<extra></extra>")
        fig.add_trace(trace)
    fig.update_xaxes(title_text=axis_names[0], range=[float(low[0]), float(high[0])], autorange=False, zeroline=False)
    fig.update_yaxes(title_text=axis_names[1], range=[float(low[1]), float(high[1])], autorange=False, zeroline=False)
    fig.update_layout(hovermode="closest")
    if len(frames) > 1:
        names = [str(e) for e in epochs]
        fig.frames = [go.Frame(name=n, data=traces(f)) for n, f in zip(names, stacked)]
        play = dict(frame=dict(duration=450, redraw=False), transition=dict(duration=350, easing="cubic-in-out"),
                    fromcurrent=False, mode="immediate")
        pause = dict(frame=dict(duration=0, redraw=False), transition=dict(duration=0), mode="immediate")
        fig.update_layout(
            updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.2, xanchor="left", yanchor="top",
                              pad=dict(t=0, r=10), showactive=False,
                              buttons=[dict(label="▶ Play", method="animate", args=[None, play]),
                                       dict(label="❚❚ Pause", method="animate", args=[[None], pause])])],
            sliders=[dict(active=len(frames) - 1, x=0.32, len=0.68, y=-0.14, yanchor="top", pad=dict(t=0, b=0),
                          currentvalue=dict(prefix="epoch ", xanchor="right", font=dict(size=13)),
                          steps=[dict(label=n, method="animate",
                                      args=[[n], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                                      transition=dict(duration=300))]) for n in names])])
    fig = _layout(fig, title, 560 if len(frames) > 1 else 430)
    if len(frames) > 1:
        fig.update_layout(margin=dict(b=140))
    return fig


def page_animation(fig: go.Figure | None) -> go.Figure | None:
    """`fig` for a gr.Plot: Gradio 6 hands plotly only the data and the layout (a figure's frames are dropped, so
    plotly's own play button and slider would do nothing); the frames travel in layout.meta instead, where the
    page's motion.js adds them to the plot (Plotly.addFrames), with a key of their contents so that a new
    animation replaces the old one. A figure without frames (or None) is returned as it is."""
    if fig is None or not fig.frames:
        return fig
    frames = [f.to_plotly_json() for f in fig.frames]
    key = hashlib.sha1(json.dumps(frames, sort_keys=True).encode()).hexdigest()[:16]
    page = go.Figure(fig)
    page.layout.meta = {"frames": frames, "frames_key": key}
    page.frames = []
    return page


def kl_per_epoch(epochs: list[int], kl: np.ndarray, title: str) -> go.Figure:
    """KL to N(0, 1) per latent dimension (rows) after each epoch (columns), in nats: which dimensions wake up,
    and when, or collapse onto the prior."""
    kl = np.asarray(kl, np.float64)  # (epochs, D)
    dims = [f"z[{i}]" for i in range(kl.shape[1])]
    fig = go.Figure(go.Heatmap(z=kl.T, x=list(epochs), y=dims, colorscale="Viridis", zmin=0,
                               hovertemplate="epoch %{x}, %{y}: KL %{z:.3g} nats<extra></extra>",
                               colorbar=dict(title=dict(text="KL (nats)", side="right"), thickness=12)))
    fig.update_xaxes(title_text="epoch", type="linear" if len(epochs) > 1 else "category")
    fig.update_yaxes(title_text="latent dimension", autorange="reversed")
    return _layout(fig, title, max(280, 18 * len(dims) + 140))

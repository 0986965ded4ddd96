"""Plotly figures for the explorer: latent maps, loss curves, error histograms.
Each takes plain arrays and returns a `go.Figure`; nothing here knows about Gradio."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# Ten distinguishable colours (Tableau 10), one per class; more classes cycle.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.02, font=dict(size=14)), height=height,
                      margin=dict(l=40, r=10, t=40, b=35), template="plotly_white",
                      legend=dict(itemsizing="constant", font=dict(size=10)))
    return fig


def latent_map(points: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
               axis_names: tuple[str, str] = ("z[0]", "z[1]"), selected: int | None = None,
               height: int = 430) -> go.Figure:
    """Scatter of (N, 2) points coloured by label, WebGL so 10,000+ points stay responsive.

    Every point carries its test-set index as `customdata`: hover shows it, and the
    page's click bridge sends it back to select the point.
    """
    fig = go.Figure()
    labels = np.asarray(labels)
    index = np.arange(len(points))
    for i, label in enumerate(np.unique(labels)):
        mask = labels == label
        name = classes[label] if 0 <= label < len(classes) else ("unlabelled" if label < 0 else str(label))
        fig.add_trace(go.Scattergl(
            x=points[mask, 0], y=points[mask, 1], mode="markers", name=name,
            customdata=index[mask], marker=dict(size=5, opacity=0.75, color=PALETTE[i % len(PALETTE)]),
            hovertemplate=f"index %{{customdata}}<br>label {name}<extra></extra>",
        ))
    if selected is not None and 0 <= selected < len(points):
        fig.add_trace(go.Scattergl(
            x=[points[selected, 0]], y=[points[selected, 1]], mode="markers", name="selected",
            customdata=[selected], marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(width=3, color="black")),
            hovertemplate="selected: index %{customdata}<extra></extra>",
        ))
    fig.update_xaxes(title_text=axis_names[0], zeroline=False)
    fig.update_yaxes(title_text=axis_names[1], zeroline=False)
    fig.update_layout(clickmode="event", hovermode="closest", uirevision=title)
    return _layout(fig, title, height)


def loss_curves(train: list[tuple[float, dict]], test: list[tuple[int, dict]],
                title: str = "Loss per term (nats per item)") -> go.Figure:
    """Training curves: `train` [(epochs done, {term: value})], `test` [(epoch, {term: value})].
    One colour per term; train solid, test dotted with markers."""
    fig = go.Figure()
    terms = list(train[-1][1]) if train else []
    for i, term in enumerate(terms):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(x, values[term]) for x, values in train if term in values]
        if pts:
            xs, ys = zip(*pts)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"train {term}", line=dict(color=colour)))
        tpts = [(epoch, values[term]) for epoch, values in test if term in values]
        if tpts:
            xs, ys = zip(*tpts)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"test {term}",
                                     line=dict(color=colour, dash="dot")))
    values = [y for tr in fig.data for y in tr.y]
    if values and min(values) > 0:
        fig.update_yaxes(type="log", dtick=1)  # a label per power of ten: readable at a glance
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title, 360)


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

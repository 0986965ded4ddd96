"""Active units and per-dimension KL recorded after every epoch (issue 14 item 1), checked against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_explorer import TrainConfig, build_model, fit
from vae_explorer.figures import loss_curves


def numpy_usage(model, data):
    """Posterior means and log-variances of every test item, then the active units (Var_x[mu] > 0.01) and the
    mean KL(N(mu, sigma^2) || N(0, 1)) per dimension, in numpy."""
    x = data.kind.prepare(data.test_x)
    with torch.no_grad():
        q = model.posterior(x)
    mu, logvar = q.mean.double().numpy(), q.logvar.double().numpy()
    variance = mu.var(axis=0)  # population variance, as Burda et al.
    kl = 0.5 * (mu ** 2 + np.exp(logvar) - 1.0 - logvar)
    return int((variance > 0.01).sum()), variance, kl.mean(axis=0)


@pytest.fixture(scope="module")
def vae_run(digits):
    torch.manual_seed(0)
    model = build_model("vae", **digits.model_settings(), latent_dim=6)
    return fit(model, digits, TrainConfig(epochs=3, batch_size=64, iwae_k=0, history_images=0, device="cpu"))


def test_every_epoch_records_active_units_and_kl_per_dimension(vae_run, digits):
    assert [h["epoch"] for h in vae_run.history] == [1, 2, 3]
    for h in vae_run.history:
        assert h["test"]["active_units"] == h["latent"]["active_units"]
        assert len(h["latent"]["kl_per_dim"]) == len(h["latent"]["variance"]) == 6
        # The per-dimension KL sums to the model's KL term (β = 1).
        assert sum(h["latent"]["kl_per_dim"]) == pytest.approx(h["test"]["kl"], rel=1e-3, abs=1e-4)
    active, variance, kl = numpy_usage(vae_run.model, digits)  # the last epoch's model
    last = vae_run.history[-1]["latent"]
    assert last["active_units"] == active
    np.testing.assert_allclose(last["variance"], variance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(last["kl_per_dim"], kl, rtol=1e-4, atol=1e-6)
    assert 0 < active <= 6


def test_a_model_without_a_posterior_records_none(digits):
    torch.manual_seed(0)
    model = build_model("ae", **digits.model_settings(), latent_dim=2)
    result = fit(model, digits, TrainConfig(epochs=1, batch_size=128, iwae_k=0, history_images=0, device="cpu"))
    assert "latent" not in result.history[0] and "active_units" not in result.history[0]["test"]


def test_the_curves_plot_active_units_per_epoch_beside_the_losses(vae_run):
    fig = loss_curves([(h["epoch"], h["train"]) for h in vae_run.history],
                      [(h["epoch"], h["test"]) for h in vae_run.history])
    panel = [t for t in fig.data if t.name == "active units (test)"]
    assert len(panel) == 1 and panel[0].xaxis == "x2"
    assert list(panel[0].y) == [h["latent"]["active_units"] for h in vae_run.history]
    assert all(t.xaxis in (None, "x") for t in fig.data if t is not panel[0])  # the losses keep their own axes


@pytest.mark.parametrize("case", ["vae run", "negative loss, many units", "no test yet", "empty"])
def test_the_curves_unvalidated_figure_is_what_plotly_validates(vae_run, case):
    """loss_curves skips plotly's validation (every open Train tab redraws it as a run goes): the same figure
    built with validation, which raises on an unknown property or a value of the wrong type, must serialise
    to the same JSON."""
    import json

    import plotly.graph_objects as go

    train = [(h["epoch"], h["train"]) for h in vae_run.history]
    test = [(h["epoch"], {**h["test"], "active_units": h["latent"]["active_units"]}) for h in vae_run.history]
    if case == "negative loss, many units":  # a linear y axis; the units' panel without a tick per unit
        train = [(x, {**terms, "loss": -1.0}) for x, terms in train]
        test = [(epoch, {**terms, "active_units": 12}) for epoch, terms in test]
    elif case == "no test yet":
        test = []
    elif case == "empty":
        train, test = [], []
    fast = loss_curves(train, test)
    spec = fast.to_plotly_json()
    validated = go.Figure(data=spec["data"], layout=spec["layout"])
    assert json.loads(validated.to_json()) == json.loads(fast.to_json())
    assert validated.layout.template.layout.plot_bgcolor == "white"
    assert (validated.layout.yaxis.type == "log") == (case in ("vae run", "no test yet"))
    assert spec["layout"].get("yaxis2", {}).get("dtick") == (1 if case == "vae run" else None)

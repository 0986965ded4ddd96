"""Tables as a data kind: reading and typing files, the bad ones refused, missing and unseen values,
the tabular models' contract and math against torch.distributions, anomaly thresholds against numpy
and scikit-learn, and every view on a table model."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from vae_explorer import MODELS, build_model, load_checkpoint, save_checkpoint
from vae_explorer.anomaly import choose_threshold, detection_report
from vae_explorer.data import DatasetError, TableOptions, load_dataset
from vae_explorer.data.table_sets import read_table, table_dataset
from vae_explorer.data.tables import MISSING, TABLES, UNKNOWN, column_errors
from vae_explorer.training import TrainConfig, fit

TABLE_MODELS = [name for name, entry in MODELS.items() if entry.cls.data_kind == "table"]


def frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A table with what real ones have: numbers, text categories, a few-valued integer, a missing cell or two,
    an id to ignore, and a label whose rare class depends on the features."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    b = 2 * a + (colour == "red") + 0.1 * rng.normal(size=n)
    df = pd.DataFrame({"id": np.arange(n), "a": a, "b": b, "colour": colour, "level": rng.integers(0, 3, n),
                       "label": np.where(rng.random(n) < 0.05, "odd", "usual")})
    df.loc[3, "a"] = np.nan
    df.loc[5, "colour"] = None
    return df


@pytest.fixture(scope="module")
def table():
    return table_dataset(frame(), "toy", TableOptions(label_column="label", ignore_columns=("id",),
                                                      anomaly_label=("odd",)))


# ---- reading and typing -----------------------------------------------------------------------

def test_columns_are_typed_split_and_encoded(table):
    schema = table.train_x.schema
    assert [c.name for c in schema.continuous] == ["a", "b"]
    assert [c.name for c in schema.categorical] == ["colour", "level"]  # text, and an integer with 3 values
    assert schema.categorical[0].categories[:2] == ("(missing)", "(unknown)")
    assert len(table.train_x) + len(table.test_x) == 400 and len(table.test_x) == 80
    assert table.classes == ["odd", "usual"] and table.anomaly_classes == (0,)
    # Standardized with the training split's own mean and std.
    observed = table.train_x.cont[:, 0][~torch.isnan(table.train_x.cont[:, 0])]
    assert abs(float(observed.mean())) < 1e-4 and abs(float(observed.std(unbiased=False)) - 1) < 1e-3
    # The same file reads to the same split (a checkpoint's test rows never move).
    again = table_dataset(frame(), "toy", TableOptions(label_column="label", ignore_columns=("id",)))
    assert torch.equal(again.test_x.cat, table.test_x.cat)


def test_missing_values_and_unseen_categories():
    data = table_dataset(frame(), "toy", TableOptions(ignore_columns=("id", "label")))
    all_rows = TABLES.concat([data.train_x, data.test_x])
    assert torch.isnan(all_rows.cont).sum() == 1  # the one missing number stays missing (NaN), not imputed
    assert (all_rows.cat[:, 0] == MISSING).sum() == 1  # the missing colour gets the "(missing)" index
    from vae_explorer.data.table_sets import encode_rows
    new = encode_rows(pd.DataFrame({"a": [0.0], "b": [1.0], "colour": ["purple"], "level": [7]}), data.train_x.schema)
    assert new.cat.tolist() == [[UNKNOWN, UNKNOWN]]  # never seen in training


@pytest.mark.parametrize("sep, bom, header", [(",", False, True), (";", True, True), ("\t", False, False)])
def test_csv_dialects_and_parquet(tmp_path, sep, bom, header):
    df = frame(60)
    path = tmp_path / "t.csv"
    text = df.to_csv(sep=sep, index=False, header=header)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    read = read_table(path)
    assert read.shape == df.shape
    assert list(read.columns) == (list(df.columns) if header else [f"col_{i}" for i in range(6)])
    df.to_parquet(tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet").equals(df)


@pytest.mark.parametrize("case, expected", [
    ("binary", "binary file"), ("ragged", "same number of fields"), ("one_column", "at least two feature columns"),
    ("all_missing", "no values at all"), ("wide", "columns is more than"), ("ids", "distinct values"),
    ("empty", "empty"), ("label", "no label column 'nope'"),
])
def test_bad_tables_get_a_clear_message(tmp_path, case, expected):
    path = tmp_path / "bad.csv"
    options = TableOptions()
    if case == "binary":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    elif case == "ragged":
        path.write_text("a,b,c\n" + "1,2,3\n" * 20 + "1,2,3,4,5\n")
    elif case == "one_column":
        path.write_text("a\n" + "1.5\n" * 20)
    elif case == "all_missing":
        path.write_text("a,b,c\n" + "1.5,,2\n" * 20)
    elif case == "wide":
        path.write_text(",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("1" * 100_000) + "\n")
    elif case == "ids":
        pd.DataFrame({"user": [f"u{i}" for i in range(20_000)], "x": np.arange(20_000.0)}).to_csv(path, index=False)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "label":
        frame(30).to_csv(path, index=False)
        options = TableOptions(label_column="nope")
    with pytest.raises(DatasetError, match=expected):
        df = read_table(path)
        table_dataset(df, "bad", options)


def test_type_overrides():
    df = frame()
    data = table_dataset(df, "toy", TableOptions(ignore_columns=("id", "label"), continuous=("level",)))
    assert [c.name for c in data.train_x.schema.continuous] == ["a", "b", "level"]
    with pytest.raises(DatasetError, match="'colour' cannot be continuous"):
        table_dataset(df, "toy", TableOptions(ignore_columns=("id", "label"), continuous=("colour",)))


# ---- the models -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", TABLE_MODELS)
def test_contract_shapes_loss_gradients_and_round_trip(name, table, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, **table.model_settings())
    x = table.train_x[:16]
    out = model(x)
    assert out.latent.shape == (16, model.latent_dim) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.allclose(out.loss, sum(out.terms.values()))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"
    model.eval()
    recon = model.reconstruct(table.test_x[:5])
    assert recon.shape == (5, 4) and recon.cat_logp.shape == (5, sum(table.train_x.schema.cardinalities))
    assert torch.allclose(recon.cat_logp[:, :5].exp().sum(1), torch.ones(5), atol=1e-5)  # a distribution per column
    path = save_checkpoint(tmp_path / name, model, {"dataset": table.describe()})
    loaded, _ = load_checkpoint(path)
    z = torch.randn(7, model.latent_dim)
    torch.testing.assert_close(loaded.decode(z).cont, model.decode(z).cont, rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode(table.test_x), model.encode(table.test_x), rtol=0, atol=0)


@pytest.mark.parametrize("name", TABLE_MODELS)
def test_training_lowers_the_test_loss(name, table):
    torch.manual_seed(0)
    model = build_model(name, **table.model_settings())
    result = fit(model, table, TrainConfig(epochs=12, batch_size=32, device="cpu", iwae_k=0))
    first, last = result.history[0]["test"]["loss"], result.history[-1]["test"]["loss"]
    assert last < first, f"{name}: {first:.2f} -> {last:.2f}"


def test_typed_loss_and_kl_against_torch_distributions(table):
    torch.manual_seed(1)
    model = build_model("tabular_vae", **table.model_settings()).eval()  # eval: z is the posterior mean
    x = table.test_x[:20]
    out = model(x)
    q = model.posterior(x)
    reference_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, q.std), torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(out.terms["kl"], model.config.beta * reference_kl.mean(), rtol=1e-5)
    decoded = model.decode(q.mean)
    nll = torch.zeros(len(x))
    for j in range(x.cont.shape[1]):
        value = x.cont[:, j]
        seen = ~torch.isnan(value)
        normal = torch.distributions.Normal(decoded.cont[:, j], decoded.cont_scale[:, j])
        nll -= torch.where(seen, normal.log_prob(torch.nan_to_num(value)), torch.zeros(len(x)))
    for k, logp in enumerate(decoded.category_logp()):
        truth = x.cat[:, k]
        cat = torch.distributions.Categorical(logits=logp)
        nll -= torch.where(truth == MISSING, torch.zeros(len(x)), cat.log_prob(truth))
    assert torch.allclose(out.terms["recon"], nll.mean(), rtol=1e-4)
    assert torch.allclose(column_errors(decoded, x).sum(1), nll, rtol=1e-4)  # the anomaly score is that NLL


# ---- anomaly thresholds and reports ---------------------------------------------------------

def test_thresholds_and_detection_report_against_numpy_and_sklearn():
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 900), rng.normal(3, 1, 100)])
    truth = np.arange(1000) >= 900
    assert choose_threshold(scores, "percentile", 80).value == pytest.approx(np.percentile(scores, 80))
    assert choose_threshold(scores, "fpr", 0.1, scores[~truth]).value == pytest.approx(np.quantile(scores[~truth], 0.9))
    q1, q3 = np.percentile(scores, [25, 75])
    assert choose_threshold(scores, "iqr", 1.5).value == pytest.approx(q3 + 1.5 * (q3 - q1))
    median = np.median(scores)
    assert choose_threshold(scores, "mad").value == pytest.approx(median + 3.5 * 1.4826 * np.median(np.abs(scores - median)))
    report = detection_report(scores, truth, 2.0)
    assert report["roc_auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert report["average_precision"] == pytest.approx(average_precision_score(truth, scores))
    assert report["f1"] == pytest.approx(f1_score(truth, scores > 2.0))
    with pytest.raises(ValueError, match="normal"):
        choose_threshold(scores, "fpr", 0.1)


# ---- views ---------------------------------------------------------------------------------

def test_every_view_on_the_shipped_table_models(explorer):
    vae, ae = "breast_cancer_tabular_vae", "breast_cancer_tabular_ae"
    data = load_dataset("breast_cancer")
    assert explorer.shown_as(vae) == "table" and "mean radius" in explorer.map_colourings(vae)
    assert explorer.latent_map(vae, "pca", 2, "anomaly score").figure.data[0].marker.showscale
    both, _, _, caption = explorer.compare_point(ae, vae, 4)
    assert list(both["row"]) == ["row 4", ae, vae] and "Largest per-column errors" in caption
    assert abs(both.iloc[0]["mean radius"] - load_dataset_row(data, 4, "mean radius")) < 1e-3  # original units
    fig, styled, text, curves = explorer.anomalies(vae, 0.05, 8, "fpr")
    assert "ROC-AUC" in text and curves is not None and len(styled.data) == 8
    scores = explorer.load(vae).cached("errors", lambda: None)
    assert list(styled.data["row"]) == [f"#{i} ({data.label(i)})" for i in np.argsort(-scores)[:8]]
    sliders, row, _ = explorer.slider_setup(vae, 2)
    assert row.shape == (1, 30) and explorer.decode_sliders(vae, 2, [s["maximum"] for s in sliders]).shape == (1, 30)
    strip, _ = explorer.interpolation_strip([ae, vae], 0, 1, None, None, "linear", 4)
    assert strip.shape == (12, 31) and list(strip.columns[:2]) == ["row", "mean radius"]  # 30 columns, named rows
    a, b, _, distributions = explorer.sample(vae, 1.0, 0)
    assert a.shape == b.shape == (49, 30) and distributions is not None
    table, _, _, text = explorer.denoise([vae, ae], 0, None, "missing", 0.5, 0, ["mean radius", "worst area"])
    assert list(table["row"]) == ["truth", "missing (0.5)", vae, ae] and "cells recovered" in text
    assert np.isnan(table.set_index("row").loc["missing (0.5)", ["mean radius", "worst area"]].astype(float)).any()
    _, _, traversals, usage = explorer.latent_usage(vae)
    assert "dimensions active" in usage and len(traversals) == 16 * 9
    assert "| mean radius | continuous |" in explorer.card(vae)


def load_dataset_row(data, i, column):
    return float(TABLES.frame(data.test_x[i])[column].iloc[0])


def test_page_training_refuses_mismatched_models_and_foreign_files(explorer, tmp_path):
    from vae_explorer.server import ViewError

    with pytest.raises(ViewError, match="tabular_vae takes tables but digits holds images"):
        explorer.train_start("tabular_vae", "digits", epochs=1)
    with pytest.raises(ViewError, match="label_column applies to table datasets"):
        explorer.train_start("vae", "digits", epochs=1, label_column="x")
    with pytest.raises(ViewError, match="upload"):
        explorer.train_start("tabular_vae", "csv", epochs=1)
    outside = tmp_path / "t.csv"
    frame(50).to_csv(outside, index=False)
    with pytest.raises(ViewError, match="uploaded through it"):
        explorer.train_start("tabular_vae", "csv", epochs=1, data_file=str(outside))


def test_rows_take_index_lists_and_boolean_masks(table):
    rows = table.test_x
    mask = np.zeros(len(rows), bool)
    mask[[2, 5]] = True
    assert torch.equal(rows[mask].cat, rows[[2, 5]].cat) and torch.equal(rows[torch.from_numpy(mask)].cat, rows[[2, 5]].cat)


def test_a_binary_labels_anomaly_value_is_guessed_from_its_words():
    from vae_explorer.data.table_sets import _anomaly_classes

    cases = [(["fault", "normal"], ("fault",)), (["normal", "weird"], ("weird",)), (["0", "1"], ("1",)),
             (["benign", "malignant"], ("malignant",)), (["no", "yes"], ("yes",)), (["cat", "dog"], ()),
             (["a", "b", "normal"], ())]
    for classes, expected in cases:
        assert tuple(classes[i] for i in _anomaly_classes(classes, (), "kind")) == expected, classes
    assert _anomaly_classes(["cat", "dog"], ("dog",), "kind") == (1,)  # named: whatever the words

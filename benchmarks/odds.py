"""The ODDS outlier-detection protocol on the 17 ODDS tables: our tabular models against
IsolationForest and PCA, side by side in one run.

Protocol (PyOD's published benchmark, ../shared/datasets/odds/README.md): for each table,
10 random 60% train / 40% test splits (split seed 0..9); every method is fitted on the
training split without labels (outliers included, as they come) and scores the test split;
the ROC-AUC of the scores is averaged over the splits. Methods:

- tabular_vae, tabular_vae_notes, tabular_ae: `fit` with the model's own optimizer (AdamW,
  lr 1e-3, wd 1e-5, eps 1e-4) for a fixed number of optimizer steps per fit (--steps; epochs =
  ceil(steps / steps per epoch), batch 128, smaller for tiny tables so an epoch has at least 8
  steps), the learning rate on one cosine cycle over the whole run (cosine warm restarts with
  the period set to the run's epochs, so every fit ends at a low rate whatever the table's
  size); score = the row's negative log-likelihood under the decoded distribution
  (`latent.reconstruction_errors`). fit's per-epoch evaluation runs on training rows, so
  nothing of the test split is seen while fitting.
- isolation_forest: scikit-learn's IsolationForest (100 trees, random_state = split seed) on
  the raw features; score = -score_samples.
- pca: features standardized on the training split, the principal components that explain
  90% of its variance kept; score = squared reconstruction error in standardized units.

Each split's Dataset is X as a DataFrame with columns x0..x{d-1} and the label y, through
`table_dataset(df, name, TableOptions(label_column="y", anomaly_label=("1",),
test_fraction=0.4, continuous=<all feature columns>), split_seed=seed)`. Every feature is
forced continuous (default): ODDS features are numeric measurements, and the baselines see
them as numbers, so the comparison is between methods, not typings (inference would make
e.g. all 18 of lympho's ordinal codes and 98 of arrhythmia's columns categorical);
--infer-types lets the package's inference decide instead. The baselines get the same rows:
the script re-derives table_dataset's split and checks it against the Dataset's labels and
values.

    python benchmarks/odds.py                                    # the full run (~25-30 min on 2 cores)
    python benchmarks/odds.py --splits 1 --tables glass,wbc --steps 50   # a smoke run, seconds

Writes benchmarks/results/odds.md (and odds.json with every split's numbers); a smaller run
(fewer splits or tables than the full set) writes odds_smoke.md / .json in the system's temporary
folder instead, unless --out is given. One torch thread by default (--threads).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.reporting import cpu_name, write_report  # noqa: E402
from vae_explorer.data.table_sets import TableOptions, table_dataset  # noqa: E402
from vae_explorer.latent import reconstruction_errors  # noqa: E402
from vae_explorer.models import build_model  # noqa: E402
from vae_explorer.training import TrainConfig, fit  # noqa: E402

TABLES = ("arrhythmia", "cardio", "glass", "ionosphere", "letter", "lympho", "mnist", "musk", "optdigits",
          "pendigits", "pima", "satellite", "satimage-2", "shuttle", "vertebral", "vowels", "wbc")
DEEP = ("tabular_vae", "tabular_vae_notes", "tabular_ae")
BASELINES = ("isolation_forest", "pca")
METHODS = DEEP + BASELINES
TEST_FRACTION = 0.4
PCA_VARIANCE = 0.9
MIN_STEPS_PER_EPOCH = 8  # tiny tables get a smaller batch rather than one full-batch step per epoch
MIN_BATCH = 16
TYPINGS = {False: "every feature forced continuous (the baselines see them as numbers too)",
           True: "inferred by the package (whole numbers with few distinct values become categorical)"}
MONITOR_ROWS = 1000  # training rows fit evaluates after each epoch (its metrics are not used here)


def read_odds(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d) float64 and y (n,) int (1 = outlier) of one ODDS .mat file."""
    from scipy.io import loadmat

    path = root / f"{name}.mat"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: pass the ODDS folder with --root")
    m = loadmat(path)
    X, y = np.asarray(m["X"], np.float64), np.asarray(m["y"]).ravel().astype(np.int64)
    if len(X) != len(y) or not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{path}: X and y do not look like an ODDS table")
    return X, y


def split_rows(n: int, seed: int, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) as table_dataset draws them for `split_seed=seed` (checked in `dataset`)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def dataset(X: np.ndarray, y: np.ndarray, name: str, seed: int, infer_types: bool):
    """The split as a package Dataset; fails loudly if its rows are not `split_rows`'s."""
    import pandas as pd

    columns = [f"x{j}" for j in range(X.shape[1])]
    df = pd.DataFrame(X, columns=columns)
    df["y"] = y
    options = TableOptions(label_column="y", anomaly_label=("1",), test_fraction=TEST_FRACTION,
                           continuous=() if infer_types else tuple(columns))
    data = table_dataset(df, name, options, split_seed=seed)
    _, test = split_rows(len(X), seed)
    truth = data.is_anomaly(data.test_y.numpy())
    same = len(test) == len(data.test_x) and np.array_equal(truth, y[test] == 1)
    for j, col in enumerate(data.test_x.schema.continuous[:3]):
        same = same and np.allclose(col.original(data.test_x.cont[:, j].numpy()), df[col.name].to_numpy()[test],
                                    rtol=1e-4, atol=1e-4 * (1 + np.abs(df[col.name].to_numpy()).max()))
    if not same:
        raise RuntimeError(f"{name}, seed {seed}: table_dataset's split is not the one the baselines use; "
                           "update split_rows to match vae_explorer/data/table_sets.py")
    return data, truth


def batch_size_for(n_train: int, batch: int) -> int:
    return max(min(batch, n_train // MIN_STEPS_PER_EPOCH), min(MIN_BATCH, n_train))


def fit_and_score(model_name: str, data, steps: int, batch: int, seed: int) -> tuple[np.ndarray, int]:
    """Test scores of `model_name` fitted for about `steps` optimizer steps; also the steps taken."""
    n = len(data.train_x)
    batch = batch_size_for(n, batch)
    steps_per_epoch = n // batch + (n % batch > 1)  # as fit counts them (a last batch of one row is dropped)
    epochs = math.ceil(steps / steps_per_epoch)
    config = TrainConfig(epochs=epochs, batch_size=batch, seed=seed, device="cpu", restart_epochs=epochs,
                         iwae_k=0, history_images=0)
    monitored = replace(data, test_x=data.train_x[:MONITOR_ROWS], test_y=data.train_y[:MONITOR_ROWS])
    torch.manual_seed(seed)
    model = build_model(model_name, **data.model_settings())
    result = fit(model, monitored, config)
    scores = reconstruction_errors(result.model, data.test_x, data.kind)
    return scores, epochs * steps_per_epoch


def isolation_forest_scores(X_train: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=seed, n_jobs=1).fit(X_train)
    return -forest.score_samples(X_test)  # higher = more anomalous


def pca_scores(X_train: np.ndarray, X_test: np.ndarray, variance: float = PCA_VARIANCE) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_train)
    pca = PCA(n_components=variance, svd_solver="full").fit(scaler.transform(X_train))
    Z = scaler.transform(X_test)
    return ((Z - pca.inverse_transform(pca.transform(Z))) ** 2).sum(1)


def run_table(root: Path, name: str, args) -> dict:
    """Per method: the ROC-AUC of each split, and the seconds spent fitting and scoring."""
    from sklearn.metrics import roc_auc_score

    X, y = read_odds(root, name)
    out = {m: {"auc": [], "seconds": 0.0, "steps": []} for m in METHODS}
    for seed in range(args.splits):
        data, truth = dataset(X, y, name, seed, args.infer_types)
        if truth.all() or not truth.any():
            raise RuntimeError(f"{name}, seed {seed}: the test split has only one class")
        train, test = split_rows(len(X), seed)
        line = []
        for method in METHODS:
            t = time.perf_counter()
            if method == "isolation_forest":
                scores = isolation_forest_scores(X[train], X[test], seed)
            elif method == "pca":
                scores = pca_scores(X[train], X[test])
            else:
                scores, steps = fit_and_score(method, data, args.steps, args.batch, seed)
                out[method]["steps"].append(steps)
            out[method]["seconds"] += time.perf_counter() - t
            if not np.all(np.isfinite(scores)):
                raise RuntimeError(f"{name}, seed {seed}, {method}: non-finite scores")
            auc = float(roc_auc_score(truth, scores))
            out[method]["auc"].append(auc)
            line.append(f"{method} {auc:.3f}")
        print(f"  {name} split {seed}: " + ", ".join(line), flush=True)
    out["rows"], out["features"], out["outliers"] = len(X), X.shape[1], float(y.mean())
    out["train_rows"] = len(split_rows(len(X), 0)[0])
    return out


def markdown(results: dict, settings: dict) -> str:
    means = {t: {m: statistics.fmean(r[m]["auc"]) for m in METHODS} for t, r in results.items()}
    medians = {m: statistics.median(means[t][m] for t in results) for m in METHODS}
    # Best = the highest as shown (3 decimals), so equal-looking values are bold alike and share the win.
    wins = {m: sum(round(means[t][m], 3) == round(max(means[t].values()), 3) for t in results) for m in METHODS}
    seconds = {m: sum(r[m]["seconds"] for r in results.values()) for m in METHODS}
    best_deep = max(DEEP, key=lambda m: medians[m])

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def bold_best(values: dict[str, float], fmt: str = "{:.3f}") -> list[str]:
        top = fmt.format(max(values.values()))
        return [f"**{fmt.format(values[m])}**" if fmt.format(values[m]) == top else fmt.format(values[m])
                for m in METHODS]

    lines = [row(["table", "rows", "d", "outliers", "batch", *METHODS]),
             row(["---", "---:", "---:", "---:", "---:", *["---:"] * len(METHODS)])]
    for t, r in results.items():
        batch = batch_size_for(r["train_rows"], settings["batch"])
        lines.append(row([t, f"{r['rows']:,}", str(r["features"]), f"{r['outliers']:.1%}", str(batch),
                          *bold_best(means[t])]))
    lines.append(row([f"**median of {len(results)}**", "", "", "", "", *bold_best(medians)]))
    lines.append(row(["tables best (ties count for each)", "", "", "", "", *[str(wins[m]) for m in METHODS]]))
    lines.append(row(["seconds (fit + score, all splits)", "", "", "", "", *[f"{seconds[m]:.0f}" for m in METHODS]]))
    table = "\n".join(lines)
    met = medians[best_deep] >= medians["isolation_forest"]
    goal = (f"Goal: our best tabular model's median ROC-AUC ≥ IsolationForest's. Our best is {best_deep} with "
            f"{medians[best_deep]:.3f} against IsolationForest's {medians['isolation_forest']:.3f}: "
            f"**{'met' if met else 'missed'}** ({medians[best_deep] - medians['isolation_forest']:+.3f}).")
    steps = [s for r in results.values() for m in DEEP for s in r[m]["steps"]]
    s = settings
    text = f"""# ODDS: tabular models against IsolationForest and PCA

Mean test ROC-AUC over {s['splits']} random 60/40 splits (split seeds 0-{s['splits'] - 1}) per table; the best
of each row in bold. Every method is fitted on the training split without labels and scores the test split.

{table}

{goal}

Settings:
- tabular_vae, tabular_vae_notes, tabular_ae: `fit` with the models' defaults (AdamW lr 1e-3, weight decay
  1e-5, eps 1e-4, the presets' networks: hidden 64-128-256-128-64, latent 16, BatchNorm), a target of
  {s['steps']} optimizer steps per fit (epochs = ceil(steps / steps per epoch); taken: {min(steps)}-{max(steps)}),
  batch {s['batch']} or, for small tables, training rows / {MIN_STEPS_PER_EPOCH} (at least {MIN_BATCH}) — the
  "batch" column; the learning rate on one cosine cycle over the run (cosine warm restarts with the period
  set to the run's epochs). Training seed = split seed. Score: the row's negative log-likelihood under the
  decoded distribution (`reconstruction_errors`; for tabular_vae_notes a Gaussian of scale 1, i.e. half the
  squared error plus a constant).
- Feature types: {TYPINGS[s['infer_types']]}.
- isolation_forest: scikit-learn IsolationForest (defaults: 100 trees, min(256, rows) samples per tree),
  random_state = split seed, raw features; score = -score_samples.
- pca: standardized on the training split, components explaining {PCA_VARIANCE:.0%} of its variance;
  score = squared reconstruction error (standardized units).
- {s['threads']} torch thread(s), CPU: {s['cpu']}, torch {s['torch']}, scikit-learn {s['sklearn']}; the machine's 2
  cores were shared with other work, so the seconds are indicative only.
- Wall time of the whole run: {s['wall_seconds'] / 60:.1f} min. Finished {s['finished']}.

Command: `{s['command']}`
"""
    return text




def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="../shared/datasets/odds", help="the ODDS folder (relative to the repo root)")
    p.add_argument("--splits", type=int, default=10, help="random 60/40 splits per table (seeds 0..N-1)")
    p.add_argument("--tables", default=",".join(TABLES), help="comma-separated table names")
    p.add_argument("--steps", type=int, default=300, help="target optimizer steps per deep-model fit")
    p.add_argument("--batch", type=int, default=128, help="batch size (smaller for tables under 8 batches)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--infer-types", action="store_true", help="let the package type the features")
    p.add_argument("--out", default=None, help="the Markdown file (default benchmarks/results/odds.md)")
    args = p.parse_args(argv)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown or args.splits < 1 or args.steps < 1:
        p.error(f"unknown tables {unknown}" if unknown else "--splits and --steps must be at least 1")
    root = Path(args.root) if Path(args.root).is_absolute() else ROOT / args.root
    full = args.splits >= 10 and set(tables) == set(TABLES)
    default = ROOT / "benchmarks" / "results" / "odds.md" if full else Path(tempfile.gettempdir()) / "odds_smoke.md"
    out = Path(args.out) if args.out else default
    torch.set_num_threads(args.threads)

    import sklearn

    t0 = time.perf_counter()
    results = {}
    for name in tables:
        t = time.perf_counter()
        results[name] = run_table(root, name, args)
        means = ", ".join(f"{m} {statistics.fmean(results[name][m]['auc']):.3f}" for m in METHODS)
        print(f"{name}: {means} ({time.perf_counter() - t:.0f} s; {(time.perf_counter() - t0) / 60:.1f} min in all)",
              flush=True)
    settings = {"splits": args.splits, "steps": args.steps, "batch": args.batch, "threads": torch.get_num_threads(),
                "infer_types": args.infer_types, "cpu": cpu_name(),
                "torch": torch.__version__, "sklearn": sklearn.__version__,
                "wall_seconds": time.perf_counter() - t0, "finished": time.strftime("%Y-%m-%d %H:%M"),
                "command": "python benchmarks/odds.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    return write_report(markdown(results, settings), {"settings": settings, "results": results}, out)


if __name__ == "__main__":
    sys.exit(main())

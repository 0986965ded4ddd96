"""Tables from files and built-in sources -> `Dataset`s of `Rows`.

`read_table` reads a CSV (comma, semicolon or tab; with or without a header;
UTF-8 with or without BOM) or a Parquet file into pandas, refusing files that
cannot be a table with a message that says why. `table_dataset` types the
columns (numbers -> continuous; text, booleans and whole numbers with few
distinct values -> categorical; overridable), splits the rows with a fixed seed,
fits the standardization and the categories on the training split, and encodes
both splits as tensors.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .dataset import Dataset, DatasetError
from .tables import LOG_SKEW, MISSING, RESERVED, TABLES, UNKNOWN, Column, Rows, Schema

MAX_TABLE_BYTES = 200 * 1024 * 1024  # read from disk; the page's upload limit is lower (app.py)
MAX_COLUMNS = 2_000
MAX_CATEGORIES = 10_000  # per categorical column: more is an id or free text, not a category
FEW_DISTINCT = 10  # whole-number columns with at most this many values are taken as categorical
SPLIT_SEED = 0
ANOMALY_WORDS = {"1", "true", "yes", "anomaly", "anomalous", "outlier", "attack", "fraud", "malignant", "abnormal",
                 "fault", "faulty", "failure", "defect", "defective", "intrusion"}
NORMAL_WORDS = {"0", "false", "no", "normal", "ok", "benign", "good", "inlier", "legit", "legitimate", "clean"}


@dataclass(frozen=True)
class TableOptions:
    """How to read a table: which column is the label, which to ignore, type overrides, the split."""

    label_column: str | None = None
    ignore_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    continuous: tuple[str, ...] = ()
    anomaly_label: tuple[str, ...] = ()  # label values that mark anomalies; () = guess from a binary label
    normal_only: bool = False  # train on the rows not labelled anomalous (the semi-supervised protocol)
    test_fraction: float = 0.2
    header: str = "auto"  # auto | yes | no

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TableOptions":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ---- reading files -------------------------------------------------------------------------

def read_table(path, header: str = "auto"):
    """A CSV or Parquet file -> pandas DataFrame with string column names; DatasetError if it is not a table."""
    import pandas as pd

    name = os.path.basename(str(path))
    try:
        size = os.path.getsize(path)
    except OSError:
        raise DatasetError(f"{name}: the file cannot be read (does it exist?)") from None
    if size == 0:
        raise DatasetError(f"{name}: the file is empty")
    if size > MAX_TABLE_BYTES:
        raise DatasetError(f"{name}: {size / 2**20:.0f} MB is over the {MAX_TABLE_BYTES // 2**20} MB limit for tables")
    with open(path, "rb") as f:
        head = f.read(65536)
    if head.startswith(b"PAR1"):
        try:
            df = pd.read_parquet(path)
        except ImportError:
            raise DatasetError("reading Parquet needs pyarrow: pip install pyarrow") from None
        except Exception as e:  # pyarrow raises its own error types for damaged files
            raise DatasetError(f"{name}: not a readable Parquet file ({' '.join(str(e).split())[:150]})") from None
    else:
        df = _read_csv(path, name, head, header)
    df.columns = [str(c).strip() for c in df.columns]
    if len(df.columns) > MAX_COLUMNS:
        raise DatasetError(f"{name}: {len(df.columns):,} columns is more than the {MAX_COLUMNS:,} accepted")
    if len(set(df.columns)) != len(df.columns):
        dup = next(c for c in df.columns if list(df.columns).count(c) > 1)
        raise DatasetError(f"{name}: the column name {dup!r} appears twice")
    if len(df) < 10:
        raise DatasetError(f"{name}: {len(df)} rows is too few to train on (at least 10)")
    return df


def _read_csv(path, name: str, head: bytes, header: str):
    import pandas as pd

    if b"\x00" in head:
        raise DatasetError(f"{name}: a binary file, not a CSV (comma, semicolon or tab separated text)")
    text = head.decode("utf-8-sig", errors="replace")
    if text.count("\ufffd") > max(2, len(text) // 100):
        raise DatasetError(f"{name}: not UTF-8 text; save the table as a UTF-8 CSV")
    lines = text.splitlines()[:50]
    sample = "\n".join(lines[:-1] if len(lines) > 1 and not text.endswith("\n") else lines)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = max(",;\t", key=sample.count)
    if header == "auto":
        try:
            has_header = csv.Sniffer().has_header(sample)
        except csv.Error:
            has_header = True
        # The sniffer votes on column types; a first line of names that are not numbers is a header.
        first = next(csv.reader(io.StringIO(lines[0] if lines else ""), delimiter=sep), [])
        has_header = has_header or (bool(first) and not any(_is_number(v) for v in first))
    else:
        has_header = header == "yes"
    try:
        df = pd.read_csv(path, sep=sep, header=0 if has_header else None, encoding="utf-8-sig",
                         skipinitialspace=True, low_memory=False, on_bad_lines="error")
    except pd.errors.ParserError as e:
        detail = " ".join(str(e).split()).replace("Error tokenizing data. C error: ", "")
        raise DatasetError(f"{name}: the rows do not all have the same number of fields ({detail[:150]})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{name}: not UTF-8 text; save the table as a UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{name}: no rows") from None
    if not has_header:
        df.columns = [f"col_{i}" for i in range(df.shape[1])]
    return df


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# ---- typing, splitting, encoding -----------------------------------------------------------

def infer_types(df, options: TableOptions) -> dict[str, str]:
    """Column name -> "continuous" or "categorical" for every feature column (label and ignored left out)."""
    import pandas as pd

    names = set(df.columns)
    for what, wanted in (("label column", [options.label_column] if options.label_column else []),
                         ("ignored column", options.ignore_columns), ("categorical column", options.categorical),
                         ("continuous column", options.continuous)):
        for c in wanted:
            if c not in names:
                raise DatasetError(f"no {what} {c!r} in the table; its columns are: {_list(df.columns)}")
    both = set(options.categorical) & set(options.continuous)
    if both:
        raise DatasetError(f"column {sorted(both)[0]!r} cannot be both categorical and continuous")
    skip = set(options.ignore_columns) | ({options.label_column} if options.label_column else set())
    types = {}
    for c in df.columns:
        if c in skip:
            continue
        s = df[c]
        if s.isna().all():
            raise DatasetError(f"column {c!r} has no values at all: ignore it (--ignore-columns {c})")
        if c in options.categorical:
            types[c] = "categorical"
        elif c in options.continuous:
            if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                converted = pd.to_numeric(s, errors="coerce")
                bad = s[converted.isna() & s.notna()]
                if len(bad):
                    raise DatasetError(f"column {c!r} cannot be continuous: {str(bad.iloc[0])!r} is not a number")
            types[c] = "continuous"
        elif pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            types[c] = "categorical"
        else:
            values = s.dropna().to_numpy(np.float64)
            whole = np.all(np.isfinite(values)) and np.all(values == np.round(values))
            types[c] = "categorical" if whole and len(np.unique(values)) <= FEW_DISTINCT else "continuous"
    if len(types) < 2:
        raise DatasetError(f"a table needs at least two feature columns; this one has {len(types)}"
                           + (f" ({_list(types)})" if types else ""))
    return types


def _list(names, limit: int = 12) -> str:
    names = list(names)
    return ", ".join(map(str, names[:limit])) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _categories(s):
    """A column's values as a pandas Categorical with text categories (whole floats without ".0": 1.0 and
    1 are one category); missing values get code -1. Factorizing first and naming the few distinct
    values afterwards is many times faster than turning every cell into text."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        v = s.to_numpy(np.float64, na_value=np.nan)
        if np.all(np.isnan(v) | (v == np.round(v))):
            s = pd.Series(v, index=s.index).astype("Int64")
    cat = pd.Categorical(s)
    names = [str(c) for c in cat.categories]
    if len(set(names)) < len(names):  # distinct values with one text (1 and "1"): merge them by text
        return pd.Categorical(pd.Series(np.asarray(names, object)[cat.codes]).where(cat.codes >= 0, None))
    return cat.rename_categories(names)


def fit_schema(df, types: dict[str, str], train_rows: np.ndarray) -> Schema:
    """Standardization and categories from the training rows."""
    import pandas as pd

    columns = []
    for c, t in types.items():
        s = df[c].iloc[train_rows]
        if t == "continuous":
            v = pd.to_numeric(s, errors="coerce").to_numpy(np.float64)
            v = v[np.isfinite(v)]
            log = bool(len(v) > 2 and v.min() >= 0 and _skew(v) > LOG_SKEW)
            t_v = np.log1p(v) if log else v
            mean = float(t_v.mean()) if len(t_v) else 0.0
            std = float(t_v.std()) if len(t_v) > 1 else 1.0
            columns.append(Column(c, "continuous", mean, std if std > 1e-12 else 1.0, log))
        else:
            seen = sorted(_categories(s).remove_unused_categories().categories)
            if len(seen) > MAX_CATEGORIES:
                raise DatasetError(f"column {c!r} has {len(seen):,} distinct values, more than the "
                                   f"{MAX_CATEGORIES:,} a categorical column may have: an id or free text? "
                                   f"Ignore it (--ignore-columns {c}) or make it continuous")
            columns.append(Column(c, "categorical", categories=RESERVED + tuple(seen)))
    return Schema(tuple(columns))


def _skew(v: np.ndarray) -> float:
    sd = v.std()
    return float(((v - v.mean()) ** 3).mean() / sd ** 3) if sd > 0 else 0.0


def encode_rows(df, schema: Schema) -> Rows:
    """A DataFrame's feature columns as Rows of `schema`: standardized values, category indices."""
    import pandas as pd

    cont = np.empty((len(df), len(schema.continuous)), np.float32)
    for j, col in enumerate(schema.continuous):
        v = pd.to_numeric(df[col.name], errors="coerce").to_numpy(np.float64)
        v = np.where(np.isfinite(v), v, np.nan)
        cont[:, j] = col.standardize(v)
    cat = np.empty((len(df), len(schema.categorical)), np.int64)
    for k, col in enumerate(schema.categorical):
        values = _categories(df[col.name])
        known = {name: i for i, name in enumerate(col.categories)}
        lookup = np.asarray([known.get(name, UNKNOWN) for name in values.categories] + [MISSING], np.int64)
        cat[:, k] = lookup[values.codes]  # code -1 (missing) picks the last entry
    return Rows(torch.from_numpy(cont), torch.from_numpy(cat), schema)


def _anomaly_classes(classes: list[str], wanted: tuple[str, ...], label: str) -> tuple[int, ...]:
    if wanted:
        missing = [w for w in wanted if w not in classes]
        if missing:
            raise DatasetError(f"no label {missing[0]!r} in column {label!r}; its values: {_list(classes)}")
        return tuple(classes.index(w) for w in wanted)
    if len(classes) == 2:  # a binary label: the value that reads as "anomaly", or the other of one read as normal
        words = [c.strip().lower() for c in classes]
        marked = [i for i, w in enumerate(words) if w in ANOMALY_WORDS]
        if len(marked) != 1:
            marked = [i for i, w in enumerate(words) if w not in NORMAL_WORDS]
        if len(marked) == 1:
            return (marked[0],)
    return ()


def table_dataset(df, name: str, options: TableOptions, source: dict | None = None,
                  split_seed: int = SPLIT_SEED) -> Dataset:
    """A DataFrame -> Dataset of Rows: typed columns, a seeded split, the schema fitted on the training split.
    The split is fixed (split_seed) so a checkpoint's test rows are the same whenever the table is read;
    benchmarks pass other seeds for repeated random splits."""
    if not 0 < options.test_fraction < 1:
        raise DatasetError(f"the test fraction must be between 0 and 1, got {options.test_fraction}")
    types = infer_types(df, options)
    n = len(df)
    order = np.random.default_rng(split_seed).permutation(n)
    n_test = max(1, int(round(n * options.test_fraction)))
    test_rows, train_rows = np.sort(order[:n_test]), np.sort(order[n_test:])
    classes: list[str] = []
    anomaly: tuple[int, ...] = ()
    y = np.full(n, -1, np.int64)
    if options.label_column:
        labels = _categories(df[options.label_column]).remove_unused_categories()
        classes = sorted(labels.categories)
        if len(classes) > MAX_CATEGORIES:
            raise DatasetError(f"label column {options.label_column!r} has {len(classes):,} distinct values: "
                               "a label names classes (normal / anomaly, or a few kinds)")
        y = labels.reorder_categories(classes).codes.astype(np.int64)  # -1: no label
        anomaly = _anomaly_classes(classes, options.anomaly_label, options.label_column)
    if options.normal_only:
        if not anomaly:
            raise DatasetError("training on normal rows only needs a label column and the label values that mark "
                               "anomalies (--label-column, --anomaly-label)")
        train_rows = train_rows[~np.isin(y[train_rows], anomaly)]
    schema = fit_schema(df, types, train_rows)
    train, test = encode_rows(df.iloc[train_rows], schema), encode_rows(df.iloc[test_rows], schema)
    data = Dataset(name, TABLES, train, torch.from_numpy(y[train_rows]), test, torch.from_numpy(y[test_rows]),
                   classes, anomaly_classes=anomaly)
    data.source = {**(source or {}), "options": options.to_dict()}
    return data


# ---- the built-in tables -------------------------------------------------------------------

def load_breast_cancer(options: TableOptions | None = None) -> Dataset:
    """scikit-learn's breast-cancer table (ships with the package): 357 benign rows and 20 of the
    212 malignant ones, drawn with a fixed seed, as outlier benchmarks subsample the rare class
    (5.3% anomalies, as ODDS's wbc); "diagnosis" is the label, malignant the anomaly."""
    from sklearn.datasets import load_breast_cancer as sk_load

    frame = sk_load(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    malignant = np.flatnonzero(frame["diagnosis"] == "malignant")
    keep = np.sort(np.concatenate([np.flatnonzero(frame["diagnosis"] == "benign"),
                                   np.random.default_rng(SPLIT_SEED).choice(malignant, 20, replace=False)]))
    options = options or TableOptions()
    return table_dataset(frame.iloc[keep].reset_index(drop=True), "breast_cancer",
                         _with_label(options, "diagnosis", ("malignant",)))


KDD_FILE = "kddcup.data_10_percent.gz"
KDD_COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot num_failed_logins "
    "logged_in num_compromised root_shell su_attempted num_root num_file_creations num_shells num_access_files "
    "num_outbound_cmds is_host_login is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate "
    "srv_rerror_rate same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate dst_host_srv_diff_host_rate "
    "dst_host_serror_rate dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate label").split()
KDD_CATEGORICAL = ("protocol_type", "service", "flag", "land", "logged_in", "is_host_login", "is_guest_login")


def kdd_frame(root: str | None = None, download: bool = True):
    """KDD Cup 99 (10% subset, 494,021 connections) as a DataFrame: from `root`/kddcup.data_10_percent.gz
    when given, else through scikit-learn's loader (which downloads once into its data home)."""
    import pandas as pd

    if root is not None:
        path = os.path.join(root, KDD_FILE)
        if not os.path.isfile(path):
            raise DatasetError(f"kddcup99: no {KDD_FILE} in {root}; download it from the UCI KDD archive "
                               f"(kdd.ics.uci.edu/databases/kddcup99) into that folder")
        return pd.read_csv(path, header=None, names=KDD_COLUMNS)
    from sklearn.datasets import fetch_kddcup99, get_data_home

    try:
        bunch = fetch_kddcup99(percent10=True, as_frame=True, download_if_missing=download)
    except (OSError, IOError) as e:
        raise DatasetError(f"kddcup99 could not be downloaded ({' '.join(str(e).split())[:100]}). Offline: put "
                           f"{KDD_FILE} in a folder and pass it with --data-root (scikit-learn's cache is "
                           f"{get_data_home()})") from None
    frame = bunch.frame
    frame.columns = list(KDD_COLUMNS)
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].map(lambda v: v.decode() if isinstance(v, bytes) else v)
    return frame


def load_kddcup99(root: str | None = None, download: bool = True, options: TableOptions | None = None) -> Dataset:
    """KDD Cup 99 with its categorical columns; "label" is the label and, as in the deep anomaly-detection
    literature (DAGMM), "normal." connections (about 20%) are the anomalies."""
    frame = kdd_frame(root, download)
    options = options or TableOptions()
    options = replace(options, categorical=options.categorical or KDD_CATEGORICAL)
    return table_dataset(frame, "kddcup99", _with_label(options, "label", ("normal.",)))


def _with_label(options: TableOptions, label: str, anomaly: tuple[str, ...]) -> TableOptions:
    return replace(options, label_column=options.label_column or label, anomaly_label=options.anomaly_label or anomaly)


def load_table_file(path: str | None, options: TableOptions | None = None) -> Dataset:
    """Your own table: a CSV or Parquet file."""
    if not path:
        raise DatasetError("the csv dataset reads a file: pass --data PATH (a .csv, .tsv or .parquet file)")
    options = options or TableOptions()
    df = read_table(path, options.header)
    stem = os.path.splitext(os.path.basename(str(path)))[0]
    return table_dataset(df, f"csv:{stem}", options, {"path": os.path.abspath(str(path))})

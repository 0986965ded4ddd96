"""Anomaly detection with any model: a score per item (its reconstruction error in
the data kind's units), a threshold chosen by one of four rules, and, where labels
mark anomalies, how well the scores find them (ROC-AUC, average precision, and
precision / recall / F1 of the flag at the threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLD_RULES = ("percentile", "fpr", "iqr", "mad")
DEFAULT_LEVELS = {"percentile": 95.0, "fpr": 0.05, "iqr": 1.5, "mad": 3.5}  # each rule's usual setting


@dataclass
class Threshold:
    value: float
    rule: str
    explanation: str  # for people: how it was chosen


def choose_threshold(scores: np.ndarray, rule: str = "percentile", level: float | None = None,
                     normal_scores: np.ndarray | None = None) -> Threshold:
    """A score above which items are flagged.

    percentile: the `level`-th percentile of `scores` (default 95: flag the top 5%).
    fpr: the score that flags a share `level` (default 0.05) of held-out normal items
         (`normal_scores`, e.g. the test rows labelled normal): a target false-positive rate.
    iqr: Tukey's fence, Q3 + `level` (default 1.5) × (Q3 - Q1).
    mad: median + `level` (default 3.5) × 1.4826 × the median absolute deviation (a robust z-score).
    """
    scores = np.asarray(scores, np.float64)
    if not len(scores):
        raise ValueError("no scores to threshold")
    if rule == "percentile":
        level = DEFAULT_LEVELS[rule] if level is None else float(level)
        if not 0 <= level <= 100:
            raise ValueError(f"the percentile must be between 0 and 100, got {level:g}")
        value = float(np.percentile(scores, level))
        text = f"the {level:g}th percentile of the scores (flags the top {100 - level:g}%)"
    elif rule == "fpr":
        level = DEFAULT_LEVELS[rule] if level is None else float(level)
        if not 0 < level < 1:
            raise ValueError(f"the false-positive rate must be between 0 and 1, got {level:g}")
        if normal_scores is None or not len(normal_scores):
            raise ValueError("a target false-positive rate needs items known to be normal (a label column that "
                             "marks anomalies)")
        value = float(np.quantile(np.asarray(normal_scores, np.float64), 1 - level))
        text = f"flags {level:.1%} of the {len(normal_scores):,} held-out normal items (target false-positive rate)"
    elif rule == "iqr":
        level = DEFAULT_LEVELS[rule] if level is None else float(level)
        q1, q3 = np.percentile(scores, [25, 75])
        value = float(q3 + level * (q3 - q1))
        text = f"Tukey's fence: Q3 + {level:g} × IQR"
    elif rule == "mad":
        level = DEFAULT_LEVELS[rule] if level is None else float(level)
        median = float(np.median(scores))
        mad = 1.4826 * float(np.median(np.abs(scores - median)))
        value = median + level * mad
        text = f"median + {level:g} × MAD (a robust z-score above {level:g})"
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    return Threshold(value, rule, text)


def detection_report(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float | None = None) -> dict:
    """How well `scores` rank the labelled anomalies: ROC-AUC and average precision (threshold-free), and
    with a threshold the confusion counts with precision, recall and F1 of flagging scores above it."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, truth = np.asarray(scores, np.float64), np.asarray(is_anomaly, bool)
    out: dict[str, float] = {"anomalies": int(truth.sum()), "items": len(truth)}
    if 0 < truth.sum() < len(truth):
        out["roc_auc"] = float(roc_auc_score(truth, scores))
        out["average_precision"] = float(average_precision_score(truth, scores))
    if threshold is not None:
        flagged = scores > threshold
        tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
        fn = int((~flagged & truth).sum())
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        out.update({"threshold": float(threshold), "flagged": int(flagged.sum()), "true_positives": tp,
                    "false_positives": fp, "false_negatives": fn, "precision": precision, "recall": recall,
                    "f1": 2 * precision * recall / max(precision + recall, 1e-12)})
    return out


def curves(scores: np.ndarray, is_anomaly: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ROC (false-positive rate, true-positive rate) and precision-recall (recall, precision) curves."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(is_anomaly, scores)
    precision, recall, _ = precision_recall_curve(is_anomaly, scores)
    return {"roc": (fpr, tpr), "pr": (recall, precision)}

"""Disentanglement metrics for codes of items whose factors of variation are known
(sprites): MIG, the FactorVAE score and DCI, and the factor each latent dimension
best explains. Plain functions over numpy arrays, deterministic given a seed.

Published values of these metrics disagree between implementations (Locatello et
al. 2019, appendix), so each function states the variant it computes, and
tests/test_disentanglement.py checks them on constructed codes whose answer is
known: the factors themselves, a rotation of them, pure noise.

codes: (N, D) float, one row per item (a VAE's posterior mean).
factors: (N, F) int, each item's index per factor (`Dataset.test_factors`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# scipy.stats and sklearn.ensemble are imported where they are used: together they are 1.2 s of the app's
# start-up, for a view few people open.

MIG_BINS = 20  # disentanglement_lib's default discretization of each code dimension
COLLAPSED_STD = 0.05  # FactorVAE score: dims whose std over the data is below this are dropped (disentanglement_lib)
# A dimension whose best normalized MI is below this explains no factor. An unused dimension still shows
# plug-in bias: about (bins - 1)(values - 1) / 2N nats, 0.07 nats = 0.035 of log 8 for 20 bins, an
# 8-valued factor and sprites' 922 test items; 0.1 stays clear of it.
EXPLAINS_NOTHING = 0.1


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes must be (N, D) and factors (N, F) with the same N, got {codes.shape} and "
                         f"{factors.shape}")
    if not np.isfinite(codes).all():
        raise ValueError("codes must be finite")
    for j in range(factors.shape[1]):
        if len(np.unique(factors[:, j])) < 2:
            raise ValueError(f"factor {j} takes a single value over these items: nothing to explain")
    # Relabel each factor's values 0..K-1, so counting can index by them.
    labels = np.stack([np.unique(factors[:, j], return_inverse=True)[1] for j in range(factors.shape[1])], 1)
    return codes, labels


def discretize(codes: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """(N, D) float -> (N, D) int in 0..bins-1: equal-width bins over each dimension's own range, as
    disentanglement_lib's `_histogram_discretize` (np.histogram edges, then np.digitize)."""
    codes = np.asarray(codes, np.float64)
    out = np.empty(codes.shape, np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], bins)[1]
        # The inner edges only: the minimum lands in bin 0 and the maximum in the last bin.
        out[:, d] = np.digitize(codes[:, d], edges[1:-1])
    return out


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """(D, F) I(z_d; v_f) in nats: the plug-in estimate from the joint histogram of each discretized
    code dimension (`discretize`) and each factor's values (sklearn's mutual_info_score computes the same)."""
    codes, labels = _check(codes, factors)
    binned = discretize(codes, bins)  # (N, D)
    n, dims = binned.shape
    mi = np.zeros((dims, labels.shape[1]))
    for f in range(labels.shape[1]):
        values = labels[:, f].max() + 1
        # One bincount for every dimension at once: cell (d, bin, value) of the (D, bins, values) joint.
        cells = (np.arange(dims)[None] * bins + binned) * values + labels[:, f, None]
        joint = np.bincount(cells.ravel(), minlength=dims * bins * values).reshape(dims, bins, values) / n
        p_code, p_value = joint.sum(2, keepdims=True), joint.sum(1, keepdims=True)
        ratio = np.divide(joint, p_code * p_value, out=np.ones_like(joint), where=joint > 0)
        mi[:, f] = (joint * np.log(ratio)).sum((1, 2))
    return mi


def normalized_mutual_information(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """(D, F) I(z_d; v_f) / H(v_f): the share of each factor's entropy a dimension carries, in [0, 1]."""
    _, labels = _check(codes, factors)
    return mutual_information(codes, factors, bins) / np.array([_entropy(labels[:, f]) for f in range(labels.shape[1])])


def mig_per_factor(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """(F,) the mutual information gap of each factor: (I(z_top; v) - I(z_second; v)) / H(v)."""
    nmi = normalized_mutual_information(codes, factors, bins)
    if nmi.shape[0] < 2:  # one dimension: nothing to compete with, the gap is its whole share
        return nmi[0]
    top_two = -np.sort(-nmi, axis=0)[:2]  # (2, F)
    return top_two[0] - top_two[1]


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> float:
    """Mutual Information Gap (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs").

    Variant: disentanglement_lib's (Locatello et al. 2019), not the paper's. The paper
    estimates I(z_d; v) from the encoder's distribution q(z|x); this, like
    disentanglement_lib, discretizes the codes (here the posterior means) into `bins`
    equal-width bins per dimension and takes the plug-in MI of the joint histogram
    with the factor's values; H(v) is the empirical entropy of the factor over the
    same items. The gap between the two most informative dimensions, divided by
    H(v), averaged over factors with equal weight. 1: each factor lives in one
    dimension alone; 0: its best two dimensions know as much as each other.
    """
    return float(mig_per_factor(codes, factors, bins).mean())


def best_factor_per_dim(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> tuple[np.ndarray, np.ndarray]:
    """For labelling traversals: ((D,) the factor each dimension carries most of, (D,) that share).

    By normalized mutual information (`normalized_mutual_information`): the share of
    the factor's entropy the dimension carries, so a dimension that tells the 3
    shapes apart scores as high as one that tells the 8 positions apart. A share
    below EXPLAINS_NOTHING means the dimension explains no factor.
    """
    nmi = normalized_mutual_information(codes, factors, bins)
    best = nmi.argmax(1)
    return best, nmi[np.arange(len(nmi)), best]


def _fixed_factor_batches(labels: np.ndarray, n_batches: int, batch_size: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item indices of `n_batches` batches, each sharing one factor's value: ((n, batch_size), (n,) factor).

    The factor is drawn uniformly, its value as that of a random item (so by the
    value's frequency, as disentanglement_lib fixes the value of its first sample),
    and the batch from the items having that value: without replacement where the
    value has enough items, with replacement where it has fewer.
    """
    n_factors = labels.shape[1]
    fixed = rng.integers(0, n_factors, n_batches)
    anchor_values = labels[rng.integers(0, len(labels), n_batches), fixed]
    batches = np.empty((n_batches, batch_size), np.int64)
    for f in range(n_factors):
        for value in np.unique(anchor_values[fixed == f]):
            rows = np.flatnonzero((fixed == f) & (anchor_values == value))
            pool = np.flatnonzero(labels[:, f] == value)
            if len(pool) >= batch_size:
                # A random batch_size-subset of the pool per row: the smallest of random keys.
                picks = np.argpartition(rng.random((len(rows), len(pool))), batch_size - 1, axis=1)[:, :batch_size]
            else:
                picks = rng.integers(0, len(pool), (len(rows), batch_size))
            batches[rows] = pool[picks]
    return batches, fixed


def factor_vae_score(codes: np.ndarray, factors: np.ndarray, batch_size: int = 64, n_train: int = 5000,
                     n_eval: int = 2500, collapsed_std: float = COLLAPSED_STD, seed: int = 0) -> float:
    """The FactorVAE metric (Kim & Mnih 2018, "Disentangling by Factorising", section 4).

    Each vote: fix one factor (chosen uniformly) at one value, draw `batch_size`
    items that share that value, divide each dimension's variance over the batch by
    its variance over all the items, and vote (dimension with the smallest ratio ->
    the fixed factor). A majority-vote classifier (each dimension -> the factor it
    voted for most) is fitted on `n_train` votes and scored on `n_eval` fresh ones;
    the score is that evaluation accuracy. Chance is 1/F.

    Variant: disentanglement_lib's, on a finite set of items instead of a simulator:
    the items that share the fixed value are drawn from `factors`, the factor table
    (sprites holds every combination of factors once, so they are a sample of the
    data given that value). On a subset of the grid the few items that share a value
    are drawn again and again, so their own quirks steer the votes and noise codes
    score above 1/F: 0.21-0.27 on 1,000 of the 4,608 items against 0.19-0.22 on all
    of them (six seeds); `scorecard` reports that level. Dimensions whose std over
    the items is below `collapsed_std` (0.05, in the codes' units: prior units for a
    VAE's posterior mean) are dropped before the argmin, as in disentanglement_lib;
    with none left the score is 0. Variances are unbiased (ddof=1), over the batch and over all the
    items. disentanglement_lib takes 10,000 training and 5,000 evaluation votes; the
    defaults here are half that (the votes reuse the same few thousand items anyway).
    """
    codes, labels = _check(codes, factors)
    global_std = codes.std(0, ddof=1)
    active = global_std >= collapsed_std
    if not active.any():
        return 0.0
    codes = codes[:, active] / global_std[active]  # each kept dimension in units of its std over the data
    rng = np.random.default_rng(seed)

    def votes(n: int) -> np.ndarray:  # (D_active, F) counts of (argmin dimension, fixed factor)
        batches, fixed = _fixed_factor_batches(labels, n, batch_size, rng)
        ratio = codes[batches].var(1, ddof=1)  # (n, batch, D) -> (n, D), already divided by the global variance
        counts = np.zeros((codes.shape[1], labels.shape[1]), np.int64)
        np.add.at(counts, (ratio.argmin(1), fixed), 1)
        return counts

    train_votes, eval_votes = votes(n_train), votes(n_eval)
    classifier = train_votes.argmax(1)  # dimension -> factor
    return float(eval_votes[np.arange(len(classifier)), classifier].sum() / eval_votes.sum())


@dataclass
class DCI:
    """Eastwood & Williams 2018's three scores, with what they are computed from."""

    disentanglement: float  # in [0, 1]: each dimension's importance concentrated on one factor
    completeness: float  # in [0, 1]: each factor's importance concentrated on one dimension
    informativeness: float  # mean over factors of the predictor's accuracy on held-out items
    importance: np.ndarray  # (D, F) R[d, f]: how much dimension d serves to predict factor f; columns sum to 1
    accuracy: np.ndarray  # (F,) held-out accuracy per factor (chance: about 1 / its number of values)


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """1 - H(p) along `axis`, in base = that axis's length (so 0 = uniform, 1 = one-hot)."""
    size = p.shape[axis]
    if size < 2:  # a single option: all weight on it
        return np.ones(p.shape[1 - axis])
    from scipy.stats import entropy

    return 1.0 - entropy(p + 1e-11, base=size, axis=axis)  # entropy normalizes; 1e-11 as disentanglement_lib


def disentanglement_completeness(importance: np.ndarray) -> tuple[float, float]:
    """Eastwood & Williams' disentanglement and completeness of a (D, F) importance matrix, weighted as
    disentanglement_lib: each dimension's 1 - H_F(R[d] / sum R[d]) weighted by its share of the total
    importance; each factor's 1 - H_D(R[:, f] / sum R[:, f]) weighted by its share."""
    importance = np.abs(np.asarray(importance, np.float64))
    # All zeros (no predictor ever split): weigh everything equally rather than divide by zero.
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    per_dim = _one_minus_entropy(importance, axis=1)  # (D,)
    per_factor = _one_minus_entropy(importance, axis=0)  # (F,)
    return (float((per_dim * weights.sum(1) / weights.sum()).sum()),
            float((per_factor * weights.sum(0) / weights.sum()).sum()))


def dci(codes: np.ndarray, factors: np.ndarray, test_fraction: float = 1 / 3, max_items: int = 3000,
        n_trees: int = 30, seed: int = 0) -> DCI:
    """DCI (Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled Representations").

    Importance: one random forest classifier per factor (scikit-learn's
    RandomForestClassifier, `n_trees` trees, every dimension considered at every
    split, leaves of at least 2 items), fitted on a seeded (1 - test_fraction) share
    of the items; R[:, f] is its impurity-based feature importance (sums to 1). The
    paper used Lasso and random forests; disentanglement_lib uses gradient-boosted
    trees (GradientBoostingClassifier, 100 stages), which takes about 6 s here on
    1,000 items against under 1 s for this forest. On the constructed cases both
    give D and C of 1.00 for the factors themselves and 0.00 for noise; on a random
    rotation of the factors 0.19 (boosting) against 0.13 (this forest). Considering
    every dimension at each split (max_features=None) keeps a dimension that
    predicts a factor alone from lending importance to the others when it is left
    out of a random feature subset: with scikit-learn's default subset (sqrt D) the
    factors plus five noise dimensions score D 0.65 and C 0.54 instead of 1.00.

    Disentanglement: per dimension, 1 - H_F(R[d] / sum R[d]), weighted by the
    dimension's share of the total importance. Completeness: per factor, 1 -
    H_D(R[:, f] / sum R[:, f]), weighted by the factor's share (equal here, since
    each column sums to 1); entropies in base F and D, as disentanglement_lib.
    Informativeness: the forests' accuracy on the held-out items, averaged over
    factors (the paper's is a prediction error; this is 1 - that error).
    More than `max_items` items are subsampled (seeded) first, to bound the time.
    """
    codes, labels = _check(codes, factors)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(codes))[:max_items]
    n_test = max(1, int(round(len(order) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    importance = np.zeros((codes.shape[1], labels.shape[1]))
    accuracy = np.zeros(labels.shape[1])
    for f in range(labels.shape[1]):
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(n_trees, max_features=None, min_samples_leaf=2, random_state=seed, n_jobs=1)
        forest.fit(codes[train], labels[train, f])
        importance[:, f] = forest.feature_importances_
        accuracy[f] = forest.score(codes[test], labels[test, f])
    disentanglement, completeness = disentanglement_completeness(importance)
    return DCI(disentanglement, completeness, float(accuracy.mean()), importance, accuracy)


def scorecard(model, data, seed: int = 0) -> dict:
    """Every metric above for `model` on `data`'s test items (which must have known factors), as a plain,
    JSON-ready dict to cache: the codes are `model.encode` (a VAE's posterior mean). Takes about 2 s on
    sprites' 922 test items; DCI subsamples beyond 3,000 items (seeded)."""
    from .latent import encode_items  # torch and the models only when a model is scored

    if data.test_factors is None or not data.factor_names:
        raise ValueError(f"{data.name} has no known factors of variation: disentanglement needs them (use sprites)")
    codes = encode_items(model, data.test_x, data.kind).double().numpy()
    factors = data.test_factors.numpy()
    names = list(data.factor_names)
    result = dci(codes, factors, seed=seed)
    gaps = mig_per_factor(codes, factors)
    best, share = best_factor_per_dim(codes, factors)
    std = codes.std(0, ddof=1)
    return {
        "items": len(codes),
        "factor_names": names,
        "mig": float(gaps.mean()),
        "mig_per_factor": dict(zip(names, gaps.tolist())),
        "factor_vae": factor_vae_score(codes, factors, seed=seed),
        # What codes without information score on these items: 1/F on the full factor grid, more on a
        # subset such as the test split, where batches sharing a value keep drawing from the same few items.
        "factor_vae_chance": factor_vae_score(np.random.default_rng(seed).normal(size=codes.shape), factors,
                                              seed=seed),
        "active_dims": int((std >= COLLAPSED_STD).sum()),
        "dci_disentanglement": result.disentanglement,
        "dci_completeness": result.completeness,
        "dci_informativeness": result.informativeness,
        "dci_accuracy": dict(zip(names, result.accuracy.tolist())),
        "importance": result.importance.tolist(),  # (D, F)
        # Traversal labels: the factor each dimension carries the largest share of, or None.
        "dims": [{"dim": d, "factor": names[f] if s >= EXPLAINS_NOTHING else None, "share": float(s),
                  "std": float(std[d])} for d, (f, s) in enumerate(zip(best, share))],
    }

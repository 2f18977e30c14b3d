"""Irreproducibility metrics: per-run quality, cross-run disagreement and ensembles.

Predictions from R identically trained runs are stored as ``P`` with shape [R, N] (runs by
test examples, the probability of label 1) for binary labels, or [R, N, C] for C classes (each
row sums to 1, labels are class indices); a single run's predictions ``p`` have shape [N] or
[N, C]. Two classes given as [..., 2] are binary: column 1 is the probability of label 1, so
every metric gives exactly the numbers of that column.

For C classes, runs i and j differ on an example by the total variation
1/2 sum_c |p_ic - p_jc| (which is |p_i - p_j| for binary labels), the L2 and relative PD by
the analogous sums over classes (see each), and churn counts different top-1 labels.
"""

from collections.abc import Iterator, Sequence

import numpy as np

EPS = 1e-7
CHUNK_ELEMENTS = 2**16


def _binary(P: np.ndarray, class_axis: int) -> np.ndarray:
    """P itself, or the probability of label 1 (column 1) where P holds two classes along
    `class_axis` (1 for one run [N, 2], 2 for runs [R, N, 2])."""
    return P[..., 1] if P.ndim == class_axis + 1 and P.shape[-1] == 2 else P


def _as_prediction(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return p as float64 [N] with y float64 [N] (binary), or p as float64 [N, C] with y int64
    class indices [N]; or raise ValueError."""
    p = _binary(np.asarray(p, dtype=np.float64), 1)
    if p.ndim == 2:
        y = np.asarray(y)
        if y.shape != p.shape[:1]:
            raise ValueError(f"p [N, C] and y [N] must have equal N, got {p.shape} and {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= p.shape[1] or (y != y.astype(np.int64)).any()):
            raise ValueError(f"y must hold class indices 0..{p.shape[1] - 1}")
        return p, y.astype(np.int64)
    y = np.asarray(y, dtype=np.float64)
    if p.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"p and y must be 1-D of equal length, got {p.shape} and {y.shape}")
    return p, y


def example_log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's cross-entropy [N] in float64, with probabilities clipped to
    [EPS, 1 - EPS]."""
    p, y = _as_prediction(p, y)
    p = np.clip(p, EPS, 1 - EPS)
    if p.ndim == 2:
        return -np.log(p[np.arange(y.size), y])
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy in float64, with probabilities clipped to [EPS, 1 - EPS]."""
    return float(np.mean(example_log_loss(p, y)))


def frequency_log_loss(y: np.ndarray) -> float:
    """Log loss on labels y (0/1 or class indices) of predicting every example's label by the
    labels' frequencies in y: the entropy of those frequencies, the best a model that ignores
    the features can do."""
    counts = np.bincount(np.asarray(y).astype(np.int64))
    frequencies = counts[counts > 0] / counts.sum()
    return float(-(frequencies * np.log(frequencies)).sum())


def example_correct(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each example's predicted label matches y [N]: p >= 0.5 for binary labels, the
    top-1 class (ties to the lowest index) for C classes."""
    p, y = _as_prediction(p, y)
    if p.ndim == 2:
        return p.argmax(axis=1) == y
    return (p >= 0.5) == (y == 1)


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    """Fraction of examples whose predicted label matches y (see `example_correct`)."""
    return float(np.mean(example_correct(p, y)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, with tied values sharing the average of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + 1 + ends) / 2, ends - starts)
    return ranks


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over average ranks (ties count one half).

    For C classes, the macro average of the one-vs-rest AUCs of the classes that occur in y
    (a class absent from y has no AUC).
    """
    p, y = _as_prediction(p, y)
    if p.ndim == 1:
        return _binary_auc(p, y == 1)
    present = np.unique(y)
    if present.size < 2:
        raise ValueError("AUC is undefined: y must contain at least two classes")
    return float(np.mean([_binary_auc(p[:, c], y == c) for c in present]))


def _binary_auc(p: np.ndarray, positive: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined: y must contain both classes (0 and 1)")
    rank_sum = _average_ranks(p)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run_metrics(
    p: np.ndarray, y: np.ndarray, p_star: np.ndarray | None = None
) -> dict[str, float]:
    """Quality of one run: log loss, accuracy and AUC (NaN, missing, where y holds a single
    class: it has none); with the teacher's p_star (synthetic data), also the teacher's log
    loss and the run's log loss in excess of it."""
    one_class = np.unique(np.asarray(y)).size < 2
    result = {"log_loss": log_loss(p, y), "accuracy": accuracy(p, y),
              "auc": np.nan if one_class else auc(p, y)}
    if p_star is not None:
        result["teacher_log_loss"] = log_loss(p_star, y)
        result["excess_log_loss"] = result["log_loss"] - result["teacher_log_loss"]
    return result


def as_runs(P: np.ndarray) -> np.ndarray:
    """Return P as [R, N] or [R, N, C] with R >= 2 and C >= 3 (two classes become [R, N]),
    or raise ValueError."""
    P = _binary(np.asarray(P), 2)
    if P.ndim not in (2, 3) or P.shape[0] < 2 or P.shape[2:] == (1,):
        raise ValueError(f"P must have shape [R, N] or [R, N, C] with R >= 2 runs, got {P.shape}")
    return P


def _class_total(values: np.ndarray) -> np.ndarray:
    """Per-example values summed over classes and halved (total-variation style) for
    [N, C], unchanged for binary [N]."""
    return values if values.ndim == 1 else values.sum(axis=1) / 2


def _n_pairs(R: int) -> int:
    """Number of unordered pairs of distinct runs."""
    return R * (R - 1) // 2


def per_example_pd(P: np.ndarray) -> np.ndarray:
    """Per-example mean over run pairs of |p_i - p_j| (of 1/2 sum_c |p_ic - p_jc| for C
    classes), shape [N], in O(N C R log R).

    Uses sum_{i<j} |p_i - p_j| = sum_k (2k - R - 1) p_(k) over the sorted values p_(k), per
    example and class.
    """
    P = as_runs(P)
    R = P.shape[0]
    weights = 2.0 * np.arange(1, R + 1) - R - 1
    ordered = np.sort(P, axis=0).astype(np.float64).reshape(R, -1)
    return _class_total((weights @ ordered).reshape(P.shape[1:]) / _n_pairs(R))


def pd_l1(P: np.ndarray) -> float:
    """Mean over run pairs and examples of |p_i - p_j|, or of the total variation
    1/2 sum_c |p_ic - p_jc| for C classes (sorting trick)."""
    return float(per_example_pd(P).mean())


def pd_l1_naive(P: np.ndarray) -> float:
    """Reference O(N R^2) pd_l1 with an explicit loop over run pairs, for tests and benchmarks."""
    P = as_runs(P).astype(np.float64)
    R, N = P.shape[:2]
    total = 0.0
    for i in range(R):
        for j in range(i + 1, R):
            total += np.abs(P[i] - P[j]).sum()
    return total / (_n_pairs(R) * N) / (2 if P.ndim == 3 else 1)


def pd_l2(P: np.ndarray) -> float:
    """Root of the mean over run pairs and examples of (p_i - p_j)^2, or of
    1/2 sum_c (p_ic - p_jc)^2 for C classes (which is (p_i1 - p_j1)^2 for two), in O(N C R).

    Uses sum_{i<j} (p_i - p_j)^2 = R sum p^2 - (sum p)^2 per example (and class), on values
    centered per example (the identity is shift invariant) to avoid cancellation.
    """
    P = as_runs(P).astype(np.float64)
    R, N = P.shape[:2]
    D = P - P.mean(axis=0)
    squared_sums = _class_total(R * np.sum(D * D, axis=0) - np.sum(D, axis=0) ** 2)
    return float(np.sqrt(max(squared_sums.sum(), 0.0) / (_n_pairs(R) * N)))


def pd_relative(P: np.ndarray, chunk_elements: int = CHUNK_ELEMENTS) -> float:
    """Mean over run pairs and examples of |p_i - p_j| / ((p_i + p_j) / 2), 0 where both are 0.

    For C classes, of 1/2 sum_c |p_ic - p_jc| / ((p_ic + p_jc) / 2), 0/0 terms counting 0: the
    total variation with each class's difference relative to its mean probability (between 0
    and C; two classes are binary and use column 1).
    Computed as 2 |p_i - p_j| / (p_i + p_j) (sum_c |p_ic - p_jc| / (p_ic + p_jc)) over chunks
    of pairs holding about chunk_elements values each, which bounds memory (small,
    cache-sized chunks are also the fastest).
    """
    P = as_runs(P).astype(np.float64)
    R, N = P.shape[:2]
    rows_i, rows_j = np.triu_indices(R, k=1)
    pairs_per_chunk = max(1, chunk_elements // (P[0].size))
    total = 0.0
    for start in range(0, rows_i.size, pairs_per_chunk):
        a = P[rows_i[start : start + pairs_per_chunk]]
        b = P[rows_j[start : start + pairs_per_chunk]]
        diff = np.abs(a - b)
        pair_sum = a + b
        total += np.divide(diff, pair_sum, out=np.zeros_like(diff), where=pair_sum > 0).sum()
    return (2 if P.ndim == 2 else 1) * total / (_n_pairs(R) * N)


def _per_example_churn(P: np.ndarray) -> np.ndarray:
    """Per-example fraction of run pairs whose predicted labels differ (0.5-thresholded for
    binary, top-1 for C classes), shape [N]."""
    P = as_runs(P)
    R = P.shape[0]
    if P.ndim == 2:
        positives = np.count_nonzero(P >= 0.5, axis=0).astype(np.float64)
        return positives * (R - positives) / _n_pairs(R)
    labels = P.argmax(axis=2)
    counts = np.stack([np.count_nonzero(labels == c, axis=0) for c in range(P.shape[2])], 1)
    agreeing = (counts.astype(np.float64) ** 2).sum(axis=1)
    return (R * R - agreeing) / 2 / _n_pairs(R)


def churn(P: np.ndarray) -> float:
    """Fraction of (run pair, example) whose predicted labels differ: 0.5-thresholded for
    binary labels, top-1 (ties to the lowest class index) for C classes."""
    return float(_per_example_churn(P).mean())


def per_example_std(P: np.ndarray) -> np.ndarray:
    """Standard deviation across runs (ddof=0) per example, averaged over classes for C
    classes, shape [N]."""
    std = np.std(as_runs(P), axis=0, dtype=np.float64)
    return std if std.ndim == 1 else std.mean(axis=1)


DISAGREEMENT_KEYS = (
    "pd", "pd_relative", "pd_l2", "churn", "std_mean", "std_p50", "std_p90", "std_p99",
)


def disagreement(P: np.ndarray) -> dict[str, float]:
    """All cross-run disagreement summaries of P as python floats; the per-example std is
    summarized by its mean and the median and 90th and 99th percentiles of its distribution."""
    std = per_example_std(P)
    median, p90, p99 = np.percentile(std, [50, 90, 99])
    return {
        "pd": pd_l1(P),
        "pd_relative": pd_relative(P),
        "pd_l2": pd_l2(P),
        "churn": churn(P),
        "std_mean": float(std.mean()),
        "std_p50": float(median),
        "std_p90": float(p90),
        "std_p99": float(p99),
    }


def ensembles(P: np.ndarray, sizes: Sequence[int] | None = None
              ) -> Iterator[tuple[int, np.ndarray]]:
    """(k, E) for each ensemble size k in sizes: E [floor(R / k), ...] holds the ensembles of
    k consecutive runs, their probabilities (of each class, for C classes) averaged; sizes
    default to 1, 2, 4, ... while 2k <= R."""
    P = as_runs(P)
    R = P.shape[0]
    if sizes is None:
        sizes = [2**e for e in range(R.bit_length()) if 2 ** (e + 1) <= R]
    for k in sizes:
        n_ensembles = R // k if k > 0 else 0
        if n_ensembles < 2:
            raise ValueError(f"ensemble size {k} must leave at least 2 ensembles of {R} runs")
        members = P[: n_ensembles * k].astype(np.float64)
        yield k, members.reshape(n_ensembles, k, *P.shape[1:]).mean(axis=1)


def ensemble_disagreement(
    P: np.ndarray, y: np.ndarray, sizes: Sequence[int] | None = None
) -> list[dict[str, int | float]]:
    """Disagreement and quality of the ensembles of k consecutive runs (see `ensembles`)."""
    return [
        {
            "k": k,
            "n_ensembles": len(E),
            "pd": pd_l1(E),
            "accuracy": float(np.mean([accuracy(e, y) for e in E])),
            "log_loss": float(np.mean([log_loss(e, y) for e in E])),
        }
        for k, E in ensembles(P, sizes)
    ]

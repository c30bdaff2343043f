"""Implicit-feedback ALS: interaction weights, BM25 confidence, training and ranking metrics.

Pure numpy/scipy/implicit, no database: the training job, fold-in at request time, the
HetRec evaluation and the benchmark all go through these functions, so they weigh
listening the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from implicit.als import AlternatingLeastSquares
from scipy.sparse import coo_matrix, csr_matrix
from threadpoolctl import threadpool_limits

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TrainingParameters:
    """How the ALS model is trained (stored in each model's metadata)."""

    factors: int = 128
    regularization: float = 0.01
    # An interaction's confidence is alpha * BM25(log1p(weight)) (implicit scales the matrix
    # by alpha; its solver counts the entry's weight as that, not 1 + that); tuned on HetRec
    # (see BENCHMARKS.md).
    alpha: float = 3.0
    iterations: int = 20
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    log_scale: bool = True
    random_seed: int = 0
    # implicit's own threads; BLAS is held to one thread meanwhile so the two never
    # oversubscribe the cores.
    threads: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready values."""
        return asdict(self)


PLAIN_ALS = TrainingParameters(log_scale=False, alpha=1.0)
"""implicit's textbook recipe: BM25 on raw counts, 128 factors, 20 iterations."""

STREAM_WEIGHT = 1.0
PLAYED_SHARE_WEIGHT = 0.5
LIKE_WEIGHT = 3.0
PLAYLIST_ADD_WEIGHT = 2.0
EARLY_SKIP_CONFIDENCE = 0.25
"""A skip before 30 s of a track never streamed: preference 0, with this much confidence
per skip on top of 0.5 (at most 4 skips count)."""


def interaction_weights(
    *,
    streams: npt.NDArray[Any],
    played_share: npt.NDArray[Any],
    like_balance: npt.NDArray[Any],
    playlist_adds: npt.NDArray[Any],
    early_skips: npt.NDArray[Any],
) -> FloatArray:
    """Raw weight per interaction: positive for evidence of taste, negative for early skips only."""
    positive = (
        STREAM_WEIGHT * streams
        + PLAYED_SHARE_WEIGHT * played_share * (streams > 0)
        + LIKE_WEIGHT * (like_balance > 0)
        + PLAYLIST_ADD_WEIGHT * playlist_adds
    ).astype(np.float32)
    skipped = np.minimum(early_skips, 4).astype(np.float32)
    negative = -(0.5 + EARLY_SKIP_CONFIDENCE * skipped)
    return np.where(positive > 0, positive, np.where(skipped > 0, negative, 0)).astype(np.float32)


@dataclass(frozen=True, slots=True)
class BM25Stats:
    """What BM25 needs of the whole matrix to weigh one more row the same way (fold-in)."""

    item_idf: FloatArray
    average_length: float


def bm25_stats(positive: csr_matrix) -> BM25Stats:
    """Inverse document frequency per item and the mean row length of a user-by-item matrix."""
    users = max(positive.shape[0], 1)
    counts = np.bincount(positive.indices, minlength=positive.shape[1])
    idf = (np.log(users) - np.log1p(counts)).astype(np.float32)
    lengths = np.asarray(positive.sum(axis=1)).ravel()
    average = float(lengths.mean()) if lengths.size and lengths.mean() > 0 else 1.0
    return BM25Stats(item_idf=idf, average_length=average)


def confidence_matrix(
    weights: csr_matrix, stats: BM25Stats | None, parameters: TrainingParameters
) -> tuple[csr_matrix, BM25Stats]:
    """The matrix ALS trains on: BM25 of (log-scaled) positive weights, negatives kept as-is."""
    weights = csr_matrix(weights, dtype=np.float32)
    weights.eliminate_zeros()
    positive = weights.copy()
    positive.data = np.where(positive.data > 0, positive.data, 0).astype(np.float32)
    if parameters.log_scale:
        positive.data = np.log1p(positive.data)
    positive.eliminate_zeros()
    if stats is None:
        stats = bm25_stats(positive)
    coo = coo_matrix(positive)
    lengths = np.asarray(positive.sum(axis=1)).ravel()
    norm = (1.0 - parameters.bm25_b) + parameters.bm25_b * lengths / stats.average_length
    k1 = parameters.bm25_k1
    # Items unseen at training (idf from a matrix without them) count as rare.
    idf = np.maximum(stats.item_idf[coo.col], 0.0)
    data = coo.data * (k1 + 1.0) / (k1 * norm[coo.row] + coo.data) * idf
    scored = csr_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=weights.shape)
    negative = weights.copy()
    negative.data = np.where(negative.data < 0, negative.data, 0).astype(np.float32)
    negative.eliminate_zeros()
    combined = csr_matrix(scored + negative, dtype=np.float32)
    combined.sort_indices()
    return combined, stats


def new_als(parameters: TrainingParameters, factors: int | None = None) -> AlternatingLeastSquares:
    """An (untrained) implicit ALS model with these parameters."""
    # implicit warns when BLAS may use threads; its solvers run inside threadpool_limits(1).
    with threadpool_limits(1, "blas"):
        return _als_model(parameters, factors)


def _als_model(parameters: TrainingParameters, factors: int | None) -> AlternatingLeastSquares:
    return AlternatingLeastSquares(
        factors=factors or parameters.factors,
        regularization=parameters.regularization,
        alpha=parameters.alpha,
        iterations=parameters.iterations,
        random_state=parameters.random_seed,
        num_threads=parameters.threads,
    )


def fit_als(
    confidence: csr_matrix, parameters: TrainingParameters
) -> tuple[FloatArray, FloatArray]:
    """Train ALS on a user-by-item confidence matrix; (user factors, item factors)."""
    model = new_als(parameters)
    with threadpool_limits(1):
        model.fit(confidence, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )


class FactorizationEngine(Protocol):
    """The pluggable step of a training run: ALS factors from a confidence matrix."""

    @property
    def name(self) -> str:
        """What the model's metadata records as its `engine`."""
        ...

    def factorize(
        self, confidence: csr_matrix, parameters: TrainingParameters
    ) -> tuple[FloatArray, FloatArray]:
        """(user factors, item factors): one row per row, and per column, of `confidence`."""
        ...


class ImplicitEngine:
    """ALS with implicit, in this process: the default engine."""

    name = "implicit"

    def factorize(
        self, confidence: csr_matrix, parameters: TrainingParameters
    ) -> tuple[FloatArray, FloatArray]:
        """Train with `fit_als`."""
        return fit_als(confidence, parameters)


def fold_in_user(
    *,
    item_factors: FloatArray,
    confidence_row: csr_matrix,
    parameters: TrainingParameters,
    solver: AlternatingLeastSquares | None = None,
) -> FloatArray:
    """A user's factors recomputed from fixed item factors (least squares over their row)."""
    if solver is None:
        solver = fold_in_solver(item_factors, parameters)
    with threadpool_limits(1):
        vector = solver.recalculate_user(0, confidence_row)
    folded: FloatArray = np.asarray(vector, dtype=np.float32)
    return folded


def fold_in_solver(
    item_factors: FloatArray, parameters: TrainingParameters
) -> AlternatingLeastSquares:
    """An ALS model holding only item factors, ready to recompute users (YtY cached)."""
    solver = new_als(parameters, factors=item_factors.shape[1])
    solver.item_factors = item_factors
    solver.user_factors = np.zeros((1, item_factors.shape[1]), dtype=np.float32)
    return solver


def normalized_rows(matrix: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero): cosine similarity by dot product."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: FloatArray = (matrix / np.maximum(norms, 1e-9)).astype(np.float32)
    return unit


def group_factors(item_factors: FloatArray, item_group: IndexArray, groups: int) -> FloatArray:
    """Mean unit item factors per group (an artist's tracks), unit length again."""
    unit = normalized_rows(item_factors)
    sums = np.zeros((groups, item_factors.shape[1]), dtype=np.float32)
    known = item_group >= 0
    np.add.at(sums, item_group[known], unit[known])
    return normalized_rows(sums)


def top_k(scores: npt.NDArray[np.float32], k: int) -> IndexArray:
    """Indices of the k highest scores, best first (argpartition, then a sort of k)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")].astype(np.int64)


_DISCOUNTS = 1.0 / np.log2(np.arange(2, 1002))


def ranking_metrics(
    *,
    score_users: Callable[[IndexArray], npt.NDArray[np.float32]],
    train: csr_matrix,
    held_out: Mapping[int, set[int]],
    k: int = 10,
    batch: int = 256,
) -> tuple[float, float]:
    """Mean precision@k and NDCG@k (binary relevance), items seen in training excluded."""
    users = np.array(sorted(held_out), dtype=np.int64)
    precisions: list[float] = []
    ndcgs: list[float] = []
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = np.array(score_users(chunk), dtype=np.float32, copy=True)
        for row, user in enumerate(chunk):
            seen = train.indices[train.indptr[user] : train.indptr[user + 1]]
            scores[row, seen] = -np.inf
            ranked = top_k(scores[row], k)
            relevant = held_out[int(user)]
            hits = np.array([int(item) in relevant for item in ranked], dtype=np.float64)
            ideal = _DISCOUNTS[: min(len(relevant), k)].sum()
            precisions.append(float(hits.sum() / k))
            ndcgs.append(float((hits * _DISCOUNTS[: len(hits)]).sum() / ideal) if ideal else 0.0)
    if not precisions:
        return 0.0, 0.0
    return float(np.mean(precisions)), float(np.mean(ndcgs))


def popularity_scores(train: csr_matrix) -> npt.NDArray[np.float32]:
    """How many users interacted with each item (the popularity baseline)."""
    positive = train.copy()
    positive.data = (positive.data > 0).astype(np.float32)
    return np.asarray(positive.sum(axis=0), dtype=np.float32).ravel()


def user_item_matrix(
    users: Sequence[int] | IndexArray,
    items: Sequence[int] | IndexArray,
    weights: Sequence[float] | FloatArray,
    shape: tuple[int, int],
) -> csr_matrix:
    """A CSR user-by-item matrix of weights (duplicates summed)."""
    matrix = csr_matrix(
        (np.asarray(weights, dtype=np.float32), (np.asarray(users), np.asarray(items))),
        shape=shape,
    )
    matrix.sum_duplicates()
    return matrix

"""Offline evaluation on HetRec 2011 Last.fm (artists as items), the dataset README's protocol."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encore.recommend.training import (
    PLAIN_ALS,
    TrainingParameters,
    confidence_matrix,
    fit_als,
    popularity_scores,
    ranking_metrics,
    user_item_matrix,
)


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """One recommender's scores."""

    label: str
    precision_at_10: float
    ndcg_at_10: float


def evaluate_hetrec(path: Path, *, threads: int = 1) -> list[EvaluationRow]:
    """Popularity, plain implicit ALS and Encore's model on a random 80/20 split (rng seed 0)."""
    pairs = np.loadtxt(path / "user_artists.dat", skiprows=1, dtype=np.int64)
    _, users = np.unique(pairs[:, 0], return_inverse=True)
    _, items = np.unique(pairs[:, 1], return_inverse=True)
    plays = pairs[:, 2].astype(np.float32)
    test = np.random.default_rng(0).random(len(pairs)) < 0.2
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    train = user_item_matrix(users[~test], items[~test], plays[~test], shape)
    held_out: dict[int, set[int]] = defaultdict(set)
    for user, item in zip(users[test], items[test], strict=True):
        held_out[int(user)].add(int(item))
    popularity = popularity_scores(train)
    rows = [
        EvaluationRow(
            "popularity",
            *ranking_metrics(
                score_users=lambda chunk: np.tile(popularity, (len(chunk), 1)),
                train=train,
                held_out=held_out,
            ),
        )
    ]
    recipes = (
        ("implicit ALS (128 factors, BM25, 20 iterations)", PLAIN_ALS),
        ("Encore", TrainingParameters()),
    )
    for label, parameters in recipes:
        parameters = TrainingParameters(**{**parameters.as_dict(), "threads": threads})
        confidence, _ = confidence_matrix(train, None, parameters)
        user_factors, item_factors = fit_als(confidence, parameters)
        precision, ndcg = ranking_metrics(
            score_users=lambda chunk, u=user_factors, i=item_factors: u[chunk] @ i.T,  # type: ignore[misc]
            train=train,
            held_out=held_out,
        )
        rows.append(EvaluationRow(label, precision, ndcg))
    return rows

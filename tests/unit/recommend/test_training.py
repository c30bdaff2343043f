"""ALS training, fold-in and the radio spacing rule on synthetic data (no database)."""

from __future__ import annotations

import uuid

import numpy as np

from encore.recommend.service import pick_with_spacing
from encore.recommend.training import (
    TrainingParameters,
    confidence_matrix,
    fit_als,
    fold_in_user,
    interaction_weights,
    top_k,
    user_item_matrix,
)

PARAMETERS = TrainingParameters(factors=8, iterations=15, regularization=3.0)


def _planted(clusters: int = 3, users: int = 10, items: int = 16, plays: int = 8):
    rng = np.random.default_rng(1)
    rows, cols = [], []
    for cluster in range(clusters):
        for user in range(users):
            chosen = rng.choice(items, size=plays, replace=False) + cluster * items
            rows += [cluster * users + user] * plays
            cols += list(chosen)
    shape = (clusters * users, clusters * items)
    return user_item_matrix(rows, cols, np.full(len(rows), 3.0), shape), items, users


def test_als_recommends_within_the_planted_cluster_and_fold_in_agrees() -> None:
    weights, items, users = _planted()
    confidence, stats = confidence_matrix(weights, None, PARAMETERS)
    user_factors, item_factors = fit_als(confidence, PARAMETERS)
    for user in (0, users, 2 * users):
        cluster = user // users
        seen = set(weights[user].indices)
        scores = user_factors[user] @ item_factors.T
        scores[list(seen)] = -np.inf
        best = top_k(scores, 6)
        assert all(item // items == cluster for item in best), (cluster, best // items)
        row, _ = confidence_matrix(weights[user], stats, PARAMETERS)
        folded = fold_in_user(item_factors=item_factors, confidence_row=row, parameters=PARAMETERS)
        scores = folded @ item_factors.T
        scores[list(seen)] = -np.inf
        assert all(item // items == cluster for item in top_k(scores, 6))


def test_early_skips_are_weak_negatives_and_likes_count_most() -> None:
    weights = interaction_weights(
        streams=np.array([0, 2, 0, 1]),
        played_share=np.array([0.1, 2.0, 0.0, 1.0]),
        like_balance=np.array([0, 0, 0, 1]),
        playlist_adds=np.array([0, 0, 0, 0]),
        early_skips=np.array([2, 0, 0, 0]),
    )
    assert weights[0] < 0 < weights[1] < weights[3]
    assert weights[2] == 0


def test_spacing_rule_and_no_repeats() -> None:
    artists = [uuid.uuid4() for _ in range(3)]
    candidates = [(uuid.uuid4(), artists[i % 2]) for i in range(10)]
    candidates += [(uuid.uuid4(), artists[2]) for _ in range(5)]
    served = {candidates[0][0]}
    picked = pick_with_spacing(candidates, recent_artists=[artists[2]], served=served, limit=20)
    order = [artists[2]] + [artist for _, artist in picked]
    assert all(len(set(order[i : i + 3])) == 3 for i in range(len(order) - 2))
    assert candidates[0][0] not in {track for track, _ in picked}
    assert len({track for track, _ in picked}) == len(picked)

"""The IVF item index against the exact scan on planted clusters (no database)."""

from __future__ import annotations

import numpy as np

from encore.recommend.ann import ItemIndex, list_count


def test_item_index_matches_exact_top_k_on_planted_clusters() -> None:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    items = (np.repeat(centres, 200, axis=0) + 0.7 * rng.standard_normal((4000, 16))).astype(
        np.float32
    )
    index = ItemIndex(items, threads=1)
    assert len(index) == 4000
    assert index.probed_lists < list_count(4000)  # an approximate search, not a full scan
    recalls = []
    for vector in rng.standard_normal((30, 16)).astype(np.float32):
        exact = np.argsort(-(items @ vector))[:50]
        found = index.top_rows(vector, 50)
        recalls.append(len(set(found.tolist()) & set(exact.tolist())) / 50)
        # The order of what it returns is exact: scores never rise down the list.
        assert np.all(np.diff(items[found] @ vector) <= 1e-5)
    assert np.mean(recalls) >= 0.95, recalls
    excluded = set(index.top_rows(items[0], 5).tolist())
    assert not excluded & set(index.top_rows(items[0], 20, excluded).tolist())


def test_a_catalog_smaller_than_the_candidates_is_answered_exactly() -> None:
    rng = np.random.default_rng(3)
    items = rng.standard_normal((600, 8)).astype(np.float32)
    index = ItemIndex(items, threads=1)
    assert index.probed_lists == list_count(600)
    for vector in rng.standard_normal((10, 8)).astype(np.float32):
        assert index.top_rows(vector, 20).tolist() == np.argsort(-(items @ vector))[:20].tolist()
    assert len(ItemIndex(items[:1], threads=1).top_rows(items[0], 5)) == 1

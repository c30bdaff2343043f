"""Approximate top-k over item factors: an HNSW index (usearch) with an exact re-rank.

An exact scan reads every item factor per request (512 MB for 1M items x 128 float32), which
is tens of milliseconds; HNSW visits a few thousand. Inner product is not a metric, and HNSW
over it misses high-norm items, so items are indexed by the usual reduction of maximum inner
product to nearest neighbours (Bachrach et al., 2014): each item x becomes the unit vector
[x, sqrt(M² - |x|²)] / M (M the largest norm) and a query q becomes [q / |q|, 0]; their
cosine is q·x / (|q| M), in the same order as q·x. The candidates' scores are then computed
exactly from the float32 factors, so the order of what comes back is exact and only
membership is approximate (recall is measured in bench/recommend.py). Small catalogs keep
the exact scan: it is already sub-millisecond there and always exact.
"""

from __future__ import annotations

import os

import numpy as np
from usearch.index import Index

from encore.recommend.training import FloatArray, IndexArray, top_k

# HNSW parameters, chosen on structured synthetic factors (bench/recommend.py): M = 32 links
# per node and insertion depth 128 for graph quality; a wide search (2048) and at least 1000
# candidates re-ranked exactly buy recall at a few milliseconds per query. Vectors are stored
# as float16 (half the memory, faster builds); the re-rank uses the float32 factors.
CONNECTIVITY = 32
EXPANSION_ADD = 128
EXPANSION_SEARCH = 2048
MIN_CANDIDATES = 1000
"""Candidates fetched (at least, or twice the wanted count) before the exact re-rank."""


class ItemIndex:
    """An HNSW index answering maximum inner product over a model's item factors (rows are
    the keys)."""

    def __init__(self, item_factors: FloatArray, *, threads: int | None = None) -> None:
        """Build the index (CPU-heavy: call it off the event loop, e.g. at model load)."""
        self._factors = item_factors
        norms = np.linalg.norm(item_factors, axis=1)
        largest = max(float(norms.max(initial=0.0)), 1e-9)
        extra = np.sqrt(np.maximum(largest**2 - norms**2, 0.0))[:, None]
        augmented = np.hstack([item_factors, extra]).astype(np.float32) / largest
        self._index = Index(
            ndim=item_factors.shape[1] + 1,
            metric="ip",
            dtype="f16",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self._index.add(
            np.arange(item_factors.shape[0], dtype=np.uint64),
            np.ascontiguousarray(augmented),
            threads=threads or os.cpu_count() or 1,
        )

    def __len__(self) -> int:
        """Items indexed."""
        return len(self._index)

    def top_rows(
        self, vector: FloatArray, count: int, exclude: set[int] | None = None
    ) -> IndexArray:
        """Rows of about the `count` highest inner products, best first, `exclude` left out."""
        exclude = exclude or set()
        wanted = min(count + len(exclude), len(self))
        if wanted <= 0:
            return np.zeros(0, dtype=np.int64)
        query = np.append(vector / max(float(np.linalg.norm(vector)), 1e-9), 0.0)
        found = self._index.search(
            np.ascontiguousarray(query, dtype=np.float32),
            min(max(wanted * 2, MIN_CANDIDATES), len(self)),
        )
        rows = np.asarray(found.keys, dtype=np.int64)
        if exclude:
            rows = rows[~np.isin(rows, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))]
        # Exact scores of the candidates: the returned order is the exact order among them.
        scores = self._factors[rows] @ vector
        return rows[top_k(scores.astype(np.float32), count)]

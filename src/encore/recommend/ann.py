"""Approximate top-k over item factors: an inverted-file index (faiss IVF) with an exact re-rank.

An exact scan reads every item factor per request (512 MB for 1M items x 128 float32), which
is tens of milliseconds. A trained catalog is not uniform: items gather around tastes
(scenes, genres), and a listener's best items sit in the few tastes they like. The index
clusters the item factors (k-means, about sqrt(n) lists) and keeps each list's items as
8-bit scalar-quantized codes (a quarter of the float32 bytes, scanned with SIMD). A query
ranks the lists by the inner product with their centre and scans only the best
`probed_lists` of them, then the candidates' scores are recomputed exactly from the float32
factors, so the order of what comes back is exact and only membership is approximate (recall
is measured in bench/recommend.py).

Inner product is used as it is, not reduced to nearest neighbours: the reduction's extra
dimension (sqrt(M² - |x|²)) dominated the clustering of low-norm items and measured no better
recall, and 129 dimensions lose the SIMD path of the 8-bit codes (5x slower scans).
"""

from __future__ import annotations

import math
import os
import threading

import faiss
import numpy as np

from encore.recommend.training import FloatArray, IndexArray, top_k

PROBED_SHARE = 0.2
"""Share of the lists scanned per query: 0.2 of 1,024 lists measured recall@50 ≈ 0.98 at
1M items (bench/recommend.py); fewer lists trade recall for speed almost linearly."""
MIN_CANDIDATES = 1000
"""Candidates fetched (at least, or twice the wanted count) before the exact re-rank."""
TRAINING_POINTS_PER_LIST = 64
"""k-means learns the list centres from this many sampled items per list (faiss wants ≥ 39)."""

# faiss runs its loops on OpenMP threads; one query scans on one thread (the server's
# concurrency is across requests), so the count is set once here for the whole process and
# only raised inside a build.
_BUILD_LOCK = threading.Lock()
faiss.omp_set_num_threads(1)


def list_count(items: int) -> int:
    """Lists for a catalog of `items`: the power of two nearest sqrt(items), at least 1."""
    if items < 2:
        return 1
    return 1 << round(math.log2(math.sqrt(items)))


class ItemIndex:
    """An IVF index answering maximum inner product over a model's item factors (rows are
    the keys)."""

    def __init__(self, item_factors: FloatArray, *, threads: int | None = None) -> None:
        """Build the index (CPU-heavy: call it off the event loop, e.g. at model load)."""
        self._factors = item_factors
        count, dimensions = item_factors.shape
        lists = min(list_count(count), max(1, count))
        # The coarse quantizer holds the list centres; kept here so it lives as the index does.
        self._centres = faiss.IndexFlatIP(dimensions)
        self._index = faiss.IndexIVFScalarQuantizer(
            self._centres,
            dimensions,
            lists,
            faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT,
        )
        vectors = np.ascontiguousarray(item_factors, dtype=np.float32)
        sample_size = min(count, lists * TRAINING_POINTS_PER_LIST)
        sample = vectors[np.random.default_rng(0).choice(count, sample_size, replace=False)]
        with _BUILD_LOCK:
            faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
            try:
                self._index.train(sample)
                self._index.add(vectors)
            finally:
                faiss.omp_set_num_threads(1)
        # Small catalogs probe enough lists to hold the candidates the re-rank wants (all of
        # them below MIN_CANDIDATES items, which makes the answer exact there).
        lists_for_candidates = math.ceil(MIN_CANDIDATES * lists / max(count, 1))
        self._index.nprobe = min(
            lists, max(1, math.ceil(lists * PROBED_SHARE), lists_for_candidates)
        )

    def __len__(self) -> int:
        """Items indexed."""
        return int(self._index.ntotal)

    @property
    def probed_lists(self) -> int:
        """Lists scanned per query."""
        return int(self._index.nprobe)

    @probed_lists.setter
    def probed_lists(self, lists: int) -> None:
        """Scan this many lists per query (the benchmark's speed/recall sweep)."""
        self._index.nprobe = min(max(1, lists), self.lists)

    @property
    def lists(self) -> int:
        """Inverted lists (k-means clusters) the items are filed under."""
        return int(self._index.nlist)

    def top_rows(
        self, vector: FloatArray, count: int, exclude: set[int] | None = None
    ) -> IndexArray:
        """Rows of about the `count` highest inner products, best first, `exclude` left out."""
        exclude = exclude or set()
        wanted = min(count + len(exclude), len(self))
        if wanted <= 0:
            return np.zeros(0, dtype=np.int64)
        query = np.ascontiguousarray(vector, dtype=np.float32)[None, :]
        _scores, found = self._index.search(query, min(max(wanted * 2, MIN_CANDIDATES), len(self)))
        rows: IndexArray = found[0].astype(np.int64)
        rows = rows[rows >= 0]  # -1 pads when the probed lists run short
        if exclude:
            rows = rows[~np.isin(rows, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))]
        # Exact scores of the candidates: the returned order is the exact order among them.
        scores = self._factors[rows] @ vector
        return rows[top_k(scores.astype(np.float32), count)]

"""Spark MLlib ALS as a training engine: the scale path of `encore recommend train`.

A Spark run is an implicit run with another factorization step (`service.build_artifact`):
the same interaction matrix, the same BM25 confidence, the same artifact, published the
same way. Spark gets the confidence matrix as implicit ratings chosen so that its
confidence (`1 + alpha * |r|`) equals the one implicit gives each entry (`alpha * |m|`),
through Arrow from the driver (no file shared with the executors, so a cluster master works
as well as `local[*]`), and its factors come back into the matrix's row order.

What stays different: Spark scales the regularization of each listener and track by their
number of positive interactions (ALS-WR), where implicit uses one constant; and Spark seeds
its factors its own way. So the factors differ from implicit's.

pyspark is an optional extra (`encore[spark]`) and needs Java: it is imported only when a
session starts, and `check_spark_available` says what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from scipy.sparse import csr_matrix

from encore.recommend.training import FloatArray, TrainingParameters

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_MASTER = "local[*]"
APP_NAME = "encore-recommend-training"
MIN_POSITIVE_RATING = 1e-6
"""Rating of a positive entry implicit weighs at most 1: Spark keeps its preference, at the
least weight Spark has (1)."""
SPARK_EXTRA = "pip install 'encore[spark]'"
JAVA_PACKAGE = "default-jre-headless"

Int32Array = npt.NDArray[np.int32]


class SparkUnavailable(Exception):
    """The spark engine cannot run here; the message says what to install."""


def check_spark_available() -> None:
    """Raise SparkUnavailable naming what the spark engine misses (pyspark, Java), if anything."""
    if importlib.util.find_spec("pyspark") is None:
        raise SparkUnavailable(
            f"the spark engine needs pyspark, which is not installed: {SPARK_EXTRA}"
        )
    java_home = os.environ.get("JAVA_HOME")
    java = (Path(java_home) / "bin" / "java").is_file() if java_home else shutil.which("java")
    if not java:
        where = f"bin/java in JAVA_HOME ({java_home})" if java_home else "`java` on PATH"
        raise SparkUnavailable(
            f"the spark engine needs Java 17 or newer, and there is no {where}: install one "
            f"(Debian: apt-get install {JAVA_PACKAGE}) or set JAVA_HOME"
        )


def is_local_master(master: str) -> bool:
    """Whether Spark runs on this machine only (`local`, `local[N]`, `local-cluster[...]`)."""
    return master == "local" or master.startswith(("local[", "local-cluster["))


def session_config(master: str, scratch: str) -> dict[str, str]:
    """The Spark settings of a training session on `master`; `scratch` is a local folder that
    lives as long as the session."""
    config = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if is_local_master(master):
        # Nothing outside this machine needs to reach a local driver; a cluster's executors
        # do, so a cluster keeps Spark's own (or spark-defaults.conf's) addresses.
        config["spark.driver.host"] = "127.0.0.1"
        config["spark.driver.bindAddress"] = "127.0.0.1"
        config["spark.sql.shuffle.partitions"] = str(os.cpu_count() or 2)
        # ALS checkpoints its factors every 10 iterations when it has somewhere to (else the
        # lineage, and each task, grows with every iteration). A cluster needs shared storage
        # for that: its spark-defaults.conf names it.
        config["spark.checkpoint.dir"] = scratch
    return config


@contextmanager
def spark_session(master: str = DEFAULT_MASTER) -> Iterator[SparkSession]:
    """A Spark session to train in: the one this process already runs (left running), else a
    new one on `master`, stopped when the block ends."""
    check_spark_available()
    from pyspark import SparkContext
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None:
        yield SparkSession.builder.getOrCreate()
        return
    with tempfile.TemporaryDirectory(prefix="encore-spark-") as scratch:
        builder = SparkSession.builder.master(master).appName(APP_NAME)
        for key, value in session_config(master, scratch).items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except PySparkRuntimeError as exc:
            # The JVM did not start: usually a Java older than Spark 4 needs.
            raise SparkUnavailable(
                f"Spark could not start its JVM (it needs Java 17+): {exc}"
            ) from exc
        try:
            yield session
        finally:
            session.stop()


def spark_ratings(
    confidence: csr_matrix, alpha: float
) -> tuple[Int32Array, Int32Array, FloatArray]:
    """(users, items, ratings) for Spark's implicit ALS that weigh each entry of a confidence
    matrix the way implicit does.

    implicit weighs an entry m by alpha·|m|, with preference 1 when m > 0; Spark weighs a
    rating r by 1 + alpha·|r|, with preference 1 when r > 0: so r = sign(m)·(|m| - 1/alpha).
    An entry implicit weighs below 1 gets Spark's nearest: a positive keeps its preference at
    weight 1 (a tiny r), a negative is left out (weight 1 and preference 0 are no entry).
    Entries of a row or column without any positive are left out as well: its least-squares
    factors are zero (nothing pulls them towards a preference), so it moves no other factor,
    and Spark, which regularizes by the count of positives, could not solve it.
    """
    if alpha <= 0:
        raise ValueError(f"the spark engine needs alpha > 0, not {alpha}")
    coo = confidence.tocoo()
    positive = coo.data > 0
    user_has_positive = np.zeros(confidence.shape[0], dtype=bool)
    user_has_positive[coo.row[positive]] = True
    item_has_positive = np.zeros(confidence.shape[1], dtype=bool)
    item_has_positive[coo.col[positive]] = True
    extra = np.abs(coo.data.astype(np.float64)) - 1.0 / alpha
    ratings = np.where(positive, np.maximum(extra, MIN_POSITIVE_RATING), -extra)
    keep = user_has_positive[coo.row] & item_has_positive[coo.col] & (positive | (extra > 0))
    return (
        coo.row[keep].astype(np.int32),
        coo.col[keep].astype(np.int32),
        ratings[keep].astype(np.float32),
    )


def _dense_factors(frame: DataFrame, rows: int, rank: int) -> FloatArray:
    """Spark's (id, features) factors as a matrix in id order; rows Spark never saw are zero."""
    table = frame.toArrow()
    ids = table.column("id").to_numpy()
    values = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    dense = np.zeros((rows, rank), dtype=np.float32)
    dense[ids] = values.reshape(len(ids), rank)
    return dense


class SparkEngine:
    """Trains ALS with Spark MLlib in a session, on the same confidence as the implicit engine."""

    name = "spark"

    def __init__(self, session: SparkSession) -> None:
        self._session = session

    def factorize(
        self, confidence: csr_matrix, parameters: TrainingParameters
    ) -> tuple[FloatArray, FloatArray]:
        """(user factors, item factors) in the matrix's row and column order."""
        from pyspark.ml.recommendation import ALS

        users, items, ratings = spark_ratings(confidence, parameters.alpha)
        rank = parameters.factors
        shape = confidence.shape
        if len(ratings) == 0:
            return np.zeros((shape[0], rank), np.float32), np.zeros((shape[1], rank), np.float32)
        frame = self._session.createDataFrame(
            pa.table(
                {
                    "user": pa.array(users, pa.int32()),
                    "item": pa.array(items, pa.int32()),
                    "rating": pa.array(ratings, pa.float32()),
                }
            )
        )
        # Spark's default of 10 blocks per side is slow on small data; one per core suffices.
        blocks = max(1, self._session.sparkContext.defaultParallelism)
        model = ALS(
            rank=rank,
            maxIter=parameters.iterations,
            regParam=parameters.regularization,
            alpha=parameters.alpha,
            implicitPrefs=True,
            seed=parameters.random_seed,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            numUserBlocks=blocks,
            numItemBlocks=blocks,
        ).fit(frame)
        return (
            _dense_factors(model.userFactors, shape[0], rank),
            _dense_factors(model.itemFactors, shape[1], rank),
        )


@contextmanager
def spark_engine(master: str = DEFAULT_MASTER) -> Iterator[SparkEngine]:
    """The spark engine on a session of `master` (see `spark_session`), for one training run."""
    with spark_session(master) as session:
        yield SparkEngine(session)

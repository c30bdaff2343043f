"""The Spark MLlib training engine: `encore recommend train --engine spark` in local mode.

One Spark session serves the whole module (starting the JVM is the slow part): training runs
find it running and reuse it. Without pyspark or Java the Spark tests skip, or fail when
services are required (CI installs both).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from typer.testing import CliRunner

from encore.app import create_app
from encore.cli import app as cli
from encore.config import Settings, load_settings
from encore.recommend.model_store import list_versions
from encore.recommend.service import open_training_engine
from encore.recommend.spark_training import (
    SparkEngine,
    SparkUnavailable,
    check_spark_available,
    spark_ratings,
    spark_session,
)
from encore.recommend.training import ImplicitEngine, TrainingParameters
from encore.storage import open_blob_store
from tests.fixtures.oauth import resources_of, user_token
from tests.fixtures.services import unavailable
from tests.integration.recommend.test_recommendations import SCOPE, _get, _planted_world

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# --dist loadfile keeps a file on one worker; the group does the same under --dist loadgroup.
pytestmark = pytest.mark.xdist_group("spark")

MODEL_ENVIRONMENT = {
    "ENCORE_RECOMMEND_FACTORS": "8",
    "ENCORE_RECOMMEND_ITERATIONS": "10",
    "ENCORE_RECOMMEND_REGULARIZATION": "3.0",
    "ENCORE_RECOMMEND_EXPLORATION_SHARE": "0.0",
}
"""Small, fast models and no exploration (as in test_recommendations), so clusters show."""


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """The module's local Spark session (two cores), stopped after its last test."""
    try:
        check_spark_available()
    except SparkUnavailable as exc:
        unavailable(str(exc))
    with spark_session("local[2]") as session:
        yield session


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """This test's database and store, with the module's small models."""
    return load_settings(
        database_url=database_url,
        storage_url=f"file://{tmp_path / 'media'}",
        log_level="warning",
        secret_key_file=str(tmp_path / "secret.key"),
        workers=0,
        recommend_model_poll_seconds=3600,
        **{
            name.removeprefix("ENCORE_").lower(): value for name, value in MODEL_ENVIRONMENT.items()
        },
    )


def _cli_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **variables: str) -> None:
    """Only these ENCORE_* variables for the command, run in an empty directory."""
    for name in list(os.environ):
        if name.startswith("ENCORE_"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)


@dataclass
class _World:
    cluster_of: dict[uuid.UUID, int]
    listeners: list[tuple[str, int]]  # username, cluster
    seed_track: uuid.UUID


async def _plant(settings: Settings) -> _World:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        playable, cluster_of, users = await _planted_world(application)
    return _World(
        cluster_of=cluster_of,
        listeners=[(user.username, cluster) for user, cluster in users],
        seed_track=playable.track_ids[0],
    )


async def _check_served(settings: Settings, world: _World) -> None:
    """A fresh API process loads the newest model and answers from its clusters."""
    versions = await list_versions(open_blob_store(settings))
    assert len(versions) == 1
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        model = resources_of(application).recommend_models.current
        assert model is not None and model.version == versions[0]
        metadata = model.artifact.metadata
        assert metadata["engine"] == "spark"
        assert metadata["parameters"]["factors"] == 8
        assert metadata["users"] == len(world.listeners)
        assert metadata["items"] == len(world.cluster_of)
        assert metadata["metrics"]["holdout"] == "time" and metadata["metrics"]["users"] > 0
        assert model.artifact.item_factors.shape == (len(world.cluster_of), 8)
        for username, cluster in world.listeners[::10]:
            token = await user_token(application, username, SCOPE)
            response = await _get(application, token, "/v1/me/recommendations", limit=6)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["source"] == "model" and body["model_version"] == versions[0]
            ids = [uuid.UUID(item["id"]) for item in body["items"]]
            assert len(ids) == 6
            in_cluster = [world.cluster_of[t] for t in ids]
            assert in_cluster.count(cluster) >= 5, (cluster, in_cluster)
        seed = world.seed_track
        response = await _get(application, token, f"/v1/tracks/{seed}/similar", limit=5)
        assert response.status_code == 200, response.text
        similar = [uuid.UUID(item["id"]) for item in response.json()["items"]]
        assert seed not in similar
        assert sum(world.cluster_of[t] == world.cluster_of[seed] for t in similar) >= 4


def test_train_with_engine_spark_publishes_a_model_the_api_serves(
    spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = asyncio.run(_plant(settings))
    _cli_environment(
        monkeypatch,
        tmp_path,
        ENCORE_DATABASE_URL=settings.database_url,
        ENCORE_STORAGE_URL=settings.storage_url,
        ENCORE_SECRET_KEY_FILE=settings.secret_key_file,
        **MODEL_ENVIRONMENT,
    )
    result = CliRunner().invoke(cli, ["recommend", "train", "--engine", "spark"])
    assert result.exit_code == 0, result.output
    assert "(engine spark)" in result.output
    # The run reused the module's session and left it running.
    assert spark.sparkContext._jsc is not None
    asyncio.run(_check_served(settings, world))


def test_spark_solves_the_least_squares_of_encores_confidence(spark: SparkSession) -> None:
    """Spark's user factors are the exact solutions, given its item factors, of the normal
    equations with implicit's confidence (alpha·m) and Spark's count-scaled regularization."""
    rng = np.random.default_rng(7)
    users, items, rank = 30, 20, 4
    dense = np.where(rng.random((users, items)) < 0.3, rng.uniform(0.5, 3.0, (users, items)), 0)
    dense[rng.random((users, items)) < 0.05] = -1.0  # early skips: preference 0
    dense[:, 0] = np.where(dense[:, 0] > 0, 0, dense[:, 0])  # a track only ever skipped
    dense[0] = np.where(dense[0] > 0, 0, dense[0])  # a listener who only skipped
    confidence = csr_matrix(dense.astype(np.float32))
    parameters = TrainingParameters(factors=rank, regularization=0.2, alpha=2.0, iterations=5)
    user_factors, item_factors = SparkEngine(spark).factorize(confidence, parameters)
    assert user_factors.shape == (users, rank) and item_factors.shape == (items, rank)
    assert not item_factors[0].any() and not user_factors[0].any()
    y = item_factors.astype(np.float64)
    for user in range(1, users):
        row = dense[user]
        seen = np.flatnonzero((row != 0) & (np.arange(items) != 0))
        positive = row[seen] > 0
        weight = parameters.alpha * np.abs(row[seen])  # implicit's confidence of each entry
        normal = (
            y.T @ y
            + (y[seen].T * (weight - 1)) @ y[seen]
            + parameters.regularization * positive.sum() * np.eye(rank)
        )
        target = (y[seen[positive]].T * weight[positive]).sum(axis=1)
        np.testing.assert_allclose(user_factors[user], np.linalg.solve(normal, target), atol=1e-5)


def test_spark_ratings_carry_implicits_confidence() -> None:
    alpha = 4.0
    confidence = csr_matrix(
        np.array(
            [[2.0, 0.1, -1.0], [0.0, 0.0, -3.0], [-0.2, 0.0, 1.5], [0.0, 0.0, 0.0]], np.float32
        )
    )
    users, items, ratings = spark_ratings(confidence, alpha)
    entries = dict(zip(zip(users.tolist(), items.tolist(), strict=True), ratings, strict=True))
    # Spark's 1 + alpha·|r| is implicit's alpha·|m|; a weak positive keeps its preference at
    # Spark's least weight; a weak negative and a listener without any positive are left out.
    assert set(entries) == {(0, 0), (0, 1), (0, 2), (2, 2)}
    assert 1 + alpha * entries[(0, 0)] == pytest.approx(alpha * 2.0)
    assert 0 < entries[(0, 1)] < 1e-5
    assert entries[(0, 2)] < 0 and 1 + alpha * -entries[(0, 2)] == pytest.approx(alpha * 1.0)
    assert 1 + alpha * entries[(2, 2)] == pytest.approx(alpha * 1.5)
    assert users.dtype == items.dtype == np.int32
    with pytest.raises(ValueError, match="alpha"):
        spark_ratings(confidence, 0.0)


def test_the_configured_engine_trains_and_a_running_session_is_reused(
    spark: SparkSession,
) -> None:
    with open_training_engine(load_settings(recommend_engine="implicit")) as engine:
        assert isinstance(engine, ImplicitEngine)
    with open_training_engine(load_settings(recommend_engine="spark")) as engine:
        assert isinstance(engine, SparkEngine) and engine.name == "spark"
    assert spark.sparkContext._jsc is not None  # not stopped: the module's session


def test_engine_spark_without_pyspark_or_java_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _cli_environment(monkeypatch, tmp_path)
    runner = CliRunner()
    unknown = runner.invoke(cli, ["recommend", "train", "--engine", "tensorflow"])
    assert unknown.exit_code == 1 and "choose implicit or spark" in unknown.output
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pyspark", None)  # import pyspark fails as when absent
        missing = runner.invoke(cli, ["recommend", "train", "--engine", "spark"])
    assert missing.exit_code == 1, missing.output
    assert isinstance(missing.exception, SystemExit)  # a message and exit 1, not a crash
    assert "pip install 'encore[spark]'" in missing.output
    assert "Traceback" not in missing.output
    installed = types.ModuleType("pyspark")  # pyspark present (or not: this test needs no JVM)
    installed.__spec__ = ModuleSpec("pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark", installed)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    no_java = runner.invoke(cli, ["recommend", "train"], env={"ENCORE_RECOMMEND_ENGINE": "spark"})
    assert no_java.exit_code == 1, no_java.output
    assert isinstance(no_java.exception, SystemExit)
    assert "Java 17" in no_java.output and "default-jre-headless" in no_java.output


def test_encore_runs_without_importing_pyspark() -> None:
    code = (
        "import sys, encore.cli, encore.recommend.service, encore.recommend.spark_training, "
        "encore.recommend.tasks; assert 'pyspark' not in sys.modules, 'pyspark imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

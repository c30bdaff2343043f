"""For-you through the ANN index answers as the exact scan does, on both databases."""

from __future__ import annotations

from fastapi import FastAPI

from encore.recommend import service
from encore.recommend.model_store import RecommendModel
from tests.fixtures.oauth import resources_of
from tests.integration.recommend.test_recommendations import _planted_world, _train, settings

__all__ = ["settings"]  # the module's small-model settings fixture, used here too


async def test_for_you_through_the_ann_index_agrees_with_the_exact_scan(app: FastAPI) -> None:
    _playable, _cluster_of, users = await _planted_world(app)
    await _train(app)
    resources = resources_of(app)
    exact_model = resources.recommend_models.current
    assert exact_model is not None and exact_model.ann is None  # small catalog: exact scan
    ann_model = RecommendModel.from_artifact(exact_model.artifact, ann_min_items=1)
    assert ann_model.ann is not None
    for user, _cluster in users[::10]:
        async with resources.session_factory() as db_session:
            answers = [
                [
                    track.id
                    for track in (
                        await service.recommend_for_user(
                            db_session=db_session,
                            model=model,
                            settings=resources.settings,
                            user_id=user.id,
                            limit=10,
                        )
                    ).items
                ]
                for model in (exact_model, ann_model)
            ]
        assert answers[0] == answers[1]

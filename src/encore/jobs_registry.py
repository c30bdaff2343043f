"""The job kinds this Encore runs, each with its handler: the one table workers are built from."""

from __future__ import annotations

from encore import bus


def default_handlers() -> dict[str, bus.JobHandler]:
    """Every job kind the workers of this Encore run (`encore serve` and `encore worker`)."""
    # Domain task modules are imported here, not at the top: they import encore.bus themselves.
    # A new kind is one entry, e.g. `"process_track": media_tasks.process_track,` after
    # `from encore.media import tasks as media_tasks`.
    from encore.events import tasks as events_tasks
    from encore.media import service as media_service
    from encore.media import tasks as media_tasks
    from encore.recommend import tasks as recommend_tasks

    return {
        bus.NOOP_JOB_KIND: bus.run_noop_job,
        media_service.PROCESS_TRACK_JOB: media_tasks.process_track,
        recommend_tasks.TRAIN_JOB: recommend_tasks.train_recommendations,
        recommend_tasks.REFRESH_PLAYLISTS_JOB: recommend_tasks.refresh_playlists,
        events_tasks.PRUNE_JOB: events_tasks.prune_dedupe_records,
    }

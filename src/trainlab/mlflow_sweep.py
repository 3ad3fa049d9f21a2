"""A sweep's parent run in MLflow: the jobs of a sweep are child runs of one parent (tag
`mlflow.parentRunId`), so that MLflow's UI nests them under it, inside the sweep's own
experiment (trainlab.trackers).

The jobs run in separate processes (and machines), so no sweep process creates the parent:
the first job finds none and creates it (under the store's lock for a local SQLite store,
so parallel jobs create one), every other job finds it by its tag `trainlab.sweep_parent`.
A job that starts marks the parent RUNNING; one that ends marks it FINISHED, so after the
last job the parent is FINISHED, with the time the last job ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARENT_TAG = "trainlab.sweep_parent"


@contextlib.contextmanager
def _held(lock: Path | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def parent_of(client: Any, experiment_id: str, sweep: str, tags: dict[str, str], lock) -> str:
    """The run id of the sweep's parent run, created by the first job that asks."""
    query = f"tags.`{PARENT_TAG}` = 'true'"
    with _held(lock):
        found = client.search_runs([experiment_id], filter_string=query, max_results=1)
        if found:
            return found[0].info.run_id
        keep = {k: v for k, v in tags.items() if k in ("task", "sweep", "git_commit")}
        run = client.create_run(
            experiment_id, run_name=f"sweep {sweep}", tags={**keep, PARENT_TAG: "true"}
        )
        return run.info.run_id


def attach(logger: Any, sweep: str, tags: dict[str, str], lock: Path | None) -> str:
    """Make the logger's run a child of the sweep's parent, which is now RUNNING."""
    client = logger.experiment
    parent = parent_of(client, logger.experiment_id, sweep, tags, lock)
    client.set_tag(logger.run_id, "mlflow.parentRunId", parent)
    client.update_run(parent, status="RUNNING")
    return parent


def job_ended(logger: Any, parent: str) -> None:
    logger.experiment.set_terminated(parent, "FINISHED")

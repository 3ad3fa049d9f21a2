"""What Hydra needs before it composes `conf/`: the resolvers our configs use."""

from __future__ import annotations

import uuid

from omegaconf import OmegaConf


def _short_unique_id() -> str:
    return uuid.uuid4().hex[:6]


def register_resolvers() -> None:
    """`${run_id:}`: a short random id, fixed for one composed config.

    Cached per config like Hydra's own `${now:}` (and copied to every job of a sweep
    with it), so two runs started in the same second still get different directories.
    """
    OmegaConf.register_new_resolver("run_id", _short_unique_id, use_cache=True, replace=True)

"""A job's JobReturn pickled for the sweep that waits for it (trainlab.search.worker): by
plain pickle, which takes ~1 ms, where cloudpickle took ~0.1 s in a fresh fork. (Its own
module: a fresh Python's worker runs as `__main__`, and what pickle names must be importable
under a name the sweep also has.)"""

from __future__ import annotations

import importlib
import io
import pickle
import sys
from typing import Any


def class_named(module: str, qualname: str) -> type:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class ByName(pickle.Pickler):
    """pickle, taking a class by its name also where the module now holds another class of
    that name: Hydra imports its plugins' config modules twice, so the launcher's
    structured config in every JobReturn is of a class plain pickle refuses."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) and obj.__module__ in sys.modules:
            try:
                current = class_named(obj.__module__, obj.__qualname__)
            except AttributeError:
                return NotImplemented
            if current is not obj and isinstance(current, type):
                return class_named, (obj.__module__, obj.__qualname__)
        return NotImplemented


def pickled(result: Any) -> bytes:
    buffer = io.BytesIO()
    ByName(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(result)
    return buffer.getvalue()

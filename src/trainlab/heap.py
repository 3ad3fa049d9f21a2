"""Python's garbage collector kept off the objects that the imports of torch and Lightning
make.

A full collection walks every object the process tracks. Importing Lightning makes ~0.5 M
objects (sympy's caches, dynamo's tables, the modules themselves) that live until the
process ends, and the collector's own thresholds start a full collection seven times on the
way, ~0.5 s of a command's start-up here for almost nothing freed; afterwards, in a sweep of
short jobs, a full collection every job or two walks them all again, 0.1-0.2 s each, a fifth
of a one-second job. So `train.py` and `eval.py` pause the collector before their imports
(`pause_collections`), and once the heavy imports are done `freeze_imports()` moves what
exists into the permanent generation (`gc.freeze()`) and lets the collector run again: it
then walks only what the runs make. Before a job is forked from the sweep the freeze also
spares the child from copying the pages a collection would touch.
"""

from __future__ import annotations

import gc

_paused = False  # by the script that started this process, which then freezes once


def pause_collections() -> None:
    """No automatic collections until `freeze_imports()`: first thing in a script."""
    global _paused
    gc.disable()
    _paused = True


def freeze_imports() -> None:
    """After the heavy imports, once, in a process whose script paused the collector:
    `gc.freeze()`, and collections back on. Elsewhere (a test, a notebook) nothing."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False


# launchers that call freeze_imports themselves: Hydra's runs the jobs in this process (train.py
# freezes in the first), trainlab's joblib launcher freezes before it starts its jobs
FREEZING_LAUNCHERS = ("BasicLauncher", "ProcessPerJobLauncher")


def unpause_for_launcher(launcher_target: str) -> None:
    """A sweep whose jobs run somewhere else (SLURM through submitit, ...) never imports what
    a job does: its collections come back on at once, for the sweeper's own long life."""
    if launcher_target.rpartition(".")[2] not in FREEZING_LAUNCHERS:
        freeze_imports()

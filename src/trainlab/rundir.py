"""One directory per run: never reused for another run, only continued by `resume=`, and
known to be writable before anything is written there.

`RunDirGuard` (a Hydra callback, conf/hydra/default.yaml) runs before Hydra creates the run
(or sweep) directory and writes `.hydra/` into it. It refuses, with one paragraph and exit
code 2:

- a run in a directory that already holds one (an explicit `hydra.run.dir=`), and a grid
  sweep in a sweep directory that already holds jobs;
- a sweep whose launcher settings do not apply (`hydra/launcher=joblib` honours only
  `hydra.launcher.n_jobs`), before the sweep directory is created;
- a run on several nodes whose directory name has a timestamp or the random run id in it
  (each node would name its own): such a run needs `hydra.run.dir=<shared path>`;
- a directory that cannot be created or written (a parent that is a file, a read-only or
  full file system, no permission, a name too long): it creates the directory and writes a
  probe file there, and on failure names the path and the errno's meaning, and removes the
  directories it created. `HYDRA_FULL_ERROR=1` shows the traceback instead.

`fs_fault_message` is the same paragraph for a file-system fault later in the run.
Nothing here imports torch or Lightning: it runs before every start-up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from trainlab.ranks import is_other_rank, launched_as_several_processes, launched_on_several_nodes
from trainlab.search.optuna_settings import is_our_sweeper

METRICS_FILE = "metrics.json"
PROBE_BYTES = 4096  # one block: a full disk refuses it
# what each errno means for a run directory, and what to do about it
FS_HINTS = {
    errno.ENOTDIR: "a part of that path is a file, not a directory",
    errno.EEXIST: "a file of that name is in the way",
    errno.ENOSPC: "the file system is full: free some space, or write elsewhere",
    errno.EDQUOT: "your disk quota is used up: free some space, or write elsewhere",
    errno.EROFS: "that file system is mounted read-only: write elsewhere",
    errno.EACCES: "you may not write there (see the directory's owner and mode)",
    errno.EPERM: "writing there is not permitted (an immutable directory, or a virtual file "
    "system such as /sys)",
    errno.ENAMETOOLONG: "a name in it is longer than the file system allows (usually 255 "
    "bytes per name, 4096 per path): choose shorter names",
    errno.ENOENT: "a part of that path cannot be created (a virtual file system such as /proc)",
}
FS_FAULTS = frozenset(FS_HINTS) | {errno.EIO}


def holds_a_run(path: Path) -> bool:
    # os.path: False (not an exception) for a path too long or under a file
    return os.path.isdir(path / ".hydra") or os.path.exists(path / METRICS_FILE)


def _same_path(a: Any, b: Path) -> bool:
    return a is not None and Path(str(a)).resolve() == b.resolve()


def _refuse(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


def fs_fault_message(err: OSError, what: str, then: str) -> str:
    """One paragraph for an OSError of the file system: what could not be written, the path,
    the errno's meaning and name, what it means here, and `then` (what to do)."""
    code = err.errno or 0
    at = f"{err.filename}: " if err.filename else ""
    hint = FS_HINTS.get(code, "the file system refused it")
    name = errno.errorcode.get(code, str(code))
    return f"{what} cannot be written: {at}{os.strerror(code)} ({name}); {hint}. {then}"


def make_writable_dir(path: Path) -> None:
    """Create `path` (and its missing parents) and write and remove a probe file in it; on an
    OSError, remove what this call created and raise it."""
    created: list[Path] = []
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    probe = path / f".write_probe.{socket.gethostname()}.{os.getpid()}"
    try:
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
                created.append(directory)
            except FileExistsError:
                if not os.path.isdir(directory):  # a file, not another rank's directory
                    raise
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise


def _check_writable(path: Path, what: str, knob: str) -> None:
    try:
        make_writable_dir(path)
    except OSError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        then = (
            f"Nothing was written. Give another place with {knob}=<dir> (or "
            "paths.log_dir=<dir> for every run)."
        )
        _refuse(fs_fault_message(err, f"{what} {path}", then))


def _named_per_node(node: Any) -> bool:
    """A directory setting whose value differs from node to node: a timestamp, or the random
    run id that train.py draws in each process."""
    unresolved = str(OmegaConf.to_container(node, resolve=False).get("dir"))
    return "${now:" in unresolved or "TRAINLAB_RUN_ID" in unresolved


def _check_one_dir_for_all_nodes(config: Any, dir_node: Any, knob: str) -> None:
    num_nodes = OmegaConf.select(
        config, "trainer.num_nodes", default=1, throw_on_resolution_failure=False
    )
    several_nodes = launched_on_several_nodes(num_nodes)
    if (several_nodes or launched_as_several_processes()) and _named_per_node(dir_node):
        where = (
            f"on several nodes (trainer.num_nodes={num_nodes})"
            if several_nodes
            else f"as {os.environ.get('WORLD_SIZE')} processes started by torchrun"
        )
        _refuse(
            f"this run trains {where}, and its directory "
            f"{knob}={OmegaConf.to_container(dir_node, resolve=False).get('dir')} is named from "
            "each process's clock and a random id, so every process would write a run of its "
            "own. Give them all the same directory (on a file system every node shares): add "
            f"{knob}=<shared path> (e.g. {knob}=outputs/big_run) to the command, the same for "
            "every process. (On one machine, trainer=ddp trainer.devices=N without torchrun "
            "starts the processes itself and needs nothing more.)"
        )


def _check_launcher(config: Any) -> None:
    """The launcher's settings, by the launcher's own rule (trainlab.search.joblib_settings)."""
    from trainlab.checks import ConfigError
    from trainlab.search.joblib_settings import check_launcher

    try:
        check_launcher(config.hydra.get("launcher"))
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra makes a raise here a warning
            import traceback

            traceback.print_exc()
        _refuse(f"{err} Nothing was written.")


def _check_sweeper(config: Any, study: bool = False, created: Path | None = None) -> None:
    """The Optuna sweeper's settings (and with `study`, its storage and study), by its own
    rule (trainlab.search.optuna_settings). A refusal removes `created`: the sweep dir that
    the writable check made for this sweep, with the new study in it."""
    from trainlab.checks import ConfigError
    from trainlab.search.optuna_checks import check_study, check_sweeper

    try:
        check_study(config) if study else check_sweeper(config)
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            import traceback

            traceback.print_exc()
        if created is not None:
            import shutil

            shutil.rmtree(created, ignore_errors=True)
        _refuse(f"{err} Nothing was written.")


def _check_own_dir(given: str, knob: str) -> None:
    """A run or sweep directory of its own: not the working directory, the project root or a
    folder above them, where .hydra/, checkpoints/ and metrics.json would land among (and
    over) other files."""
    path = Path(given.strip() or ".").resolve()
    here = Path.cwd().resolve()
    root = Path(os.environ.get("PROJECT_ROOT", here)).resolve()
    if path in (here, root) or path in here.parents or path in root.parents:
        what = "the working directory" if path == here else "a folder that holds other work"
        _refuse(
            f"{knob}={given!r} is {what} ({path}): a run's .hydra/, checkpoints/ and "
            "metrics.json would land among other files. Give a directory of its own, e.g. "
            f"{knob}=outputs/my_run, or leave {knob} out to get a fresh one under outputs/."
        )


class RunDirGuard(Callback):
    """Refuse, with exit code 2, a run or sweep that would write into an earlier one, into a
    directory the other nodes would not share, or into one that cannot be written."""

    def on_run_start(self, config, **kwargs) -> None:
        _check_one_dir_for_all_nodes(config, config.hydra.run, "hydra.run.dir")
        run_dir = Path(str(config.hydra.run.dir))
        resumed = _same_path(config.get("resume"), run_dir)
        _check_own_dir(str(config.hydra.run.dir), "hydra.run.dir")
        if not is_other_rank() and not resumed and holds_a_run(run_dir):
            _refuse(
                f"hydra.run.dir={run_dir} already holds a run (it has .hydra/ or metrics.json), "
                "and a run directory is never reused. Leave hydra.run.dir out to get a fresh "
                f"one, give a new path, or continue that run with: python train.py resume={run_dir}"
            )
        _check_writable(run_dir, "the run directory", "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        _check_launcher(config)  # first: a refusal must leave no sweep directory behind
        _check_sweeper(config)
        if "WORLD_SIZE" in os.environ:  # a sweep under torchrun, not one the launcher spreads
            _check_one_dir_for_all_nodes(config, config.hydra.sweep, "hydra.sweep.dir")
        sweep_dir = Path(str(config.hydra.sweep.dir))
        _check_own_dir(str(config.hydra.sweep.dir), "hydra.sweep.dir")
        existed = os.path.lexists(sweep_dir)
        _check_writable(sweep_dir, "the sweep directory", "hydra.sweep.dir")
        if not is_other_rank():
            _check_sweeper(config, study=True, created=None if existed else sweep_dir)
        # the Optuna sweeper numbers new jobs after its study's trials (and checks the rest)
        resumable = is_our_sweeper(config.hydra.get("sweeper"))
        if not is_other_rank() and not resumable:
            jobs = sorted(p.name for p in sweep_dir.glob("*") if holds_a_run(p))
            if jobs:
                _refuse(
                    f"hydra.sweep.dir={sweep_dir} already holds jobs ({', '.join(jobs[:5])}"
                    f"{', ...' if len(jobs) > 5 else ''}) and a sweep would write over them "
                    "from job 0. Leave hydra.sweep.dir out to get a fresh sweep directory, or "
                    "give a new one (an Optuna sweep, hparams_search=optuna, continues in its "
                    "old directory)."
                )


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json, or {} when there is none (yet) or it cannot be read."""
    try:
        return json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}

"""One job of a parallel sweep, in a process of its own: `python -m trainlab.search.worker
<payload> <result>` (started by trainlab.search.processes, never by hand).

The payload is what joblib would have sent its worker (Hydra's context, the sweep config,
the job's overrides, the task function), pickled with cloudpickle; the result is the job's
JobReturn. A job stopped by a signal (SystemExit from the task) leaves its exit code instead.
When the sweep process disappears (killed), the job is sent SIGTERM: it saves a checkpoint
and records itself `interrupted` rather than train on for nobody.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from trainlab.search.pickling import pickled

PARENT_POLL_S = 1.0


def write_result(path: Path, result: Any) -> None:
    """The JobReturn, pickled: by pickle (ByName, ~1 ms; cloudpickle took ~0.1 s in a fresh
    fork, pickling the launcher config's class by value), by cloudpickle when that cannot (a
    class made in the task), its return value as text when neither can."""
    import cloudpickle  # joblib's own dependency

    try:
        data = pickled(result)
    except Exception:
        try:
            data = cloudpickle.dumps(result)
        except Exception as err:  # e.g. an exception that cannot be pickled in the JobReturn
            if not hasattr(result, "_return_value"):
                raise
            result._return_value = RuntimeError(f"{type(result._return_value).__name__}: {err}")
            data = cloudpickle.dumps(result)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def stop_when_orphaned(parent: int) -> None:
    """SIGTERM this process once its parent (the sweep) is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sweep-watch", daemon=True).start()


def main(payload_path: str, result_path: str, parent: int) -> int:
    """A fresh Python's job: its args from the payload file."""
    stop_when_orphaned(parent)
    sys_path, blob = pickle.loads(Path(payload_path).read_bytes())
    sys.path[:] = sys_path  # what the sweep process could import (its script's folder too)
    return run(pickle.loads(blob), Path(result_path))


def run(args: tuple, result_path: Path) -> int:
    """Hydra's execute_job(*args) (as joblib's worker would), its JobReturn to result_path;
    the process's exit code."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    try:
        result: Any = execute_job(*args)
        code = 0
    except SystemExit as stop:  # the job was interrupted (128 + signal) or exited
        code = stop.code if isinstance(stop.code, int) else 1
        result = {"exit_code": code}
    except Exception as err:  # before the task ran (run_job keeps the task's own errors)
        code, result = 0, {"error": f"{type(err).__name__}: {err}"}
    write_result(result_path, result)
    return code


if __name__ == "__main__":
    from trainlab.heap import pause_collections

    pause_collections()  # until the job's imports are done, as train.py (trainlab.heap)
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

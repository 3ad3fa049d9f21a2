"""Where an Optuna study lives, and opening it: the sweeper, the jobs (to report and prune),
the report and optuna-dashboard all open the same study through `open_storage`.

- `storage: null` (the default): Optuna's file-based journal, `<sweep dir>/optuna.journal`.
  No database server, and safe for several worker processes, on one machine or on several
  that share the folder (NFS): Optuna locks the file for each write.
- a path ending in `.journal` or `.log`: a journal file there;
- any SQLAlchemy URL (`sqlite:///...`, `postgresql://...`, `mysql://...`): Optuna's RDB
  storage.

`<sweep dir>/optuna_study.json` names the storage and the study, so that the report and a
user find them without the sweep's config: `optuna-dashboard <storage>` opens it.
A study written by the old setup (hydra-optuna-sweeper, optuna 2.10) is refused by current
Optuna until its schema is upgraded: `StorageError` then says how.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from trainlab.checks import ConfigError

JOURNAL = "optuna.journal"
STUDY_FILE = "optuna_study.json"
OLD_STUDY = "optuna.db"  # where the optuna-2.10 sweeper of this template kept its study
JOURNAL_SUFFIXES = (".journal", ".log")


class StorageError(ConfigError):
    """The study's storage cannot be opened; the message says why and what to do."""


def is_journal(spec: str) -> bool:
    return "://" not in spec


def storage_spec(storage: str | None, sweep_dir: str | Path) -> str:
    """The storage as one string: a journal file's absolute path, or an RDB URL as given."""
    if storage is None or str(storage).strip() == "":
        return str((Path(sweep_dir) / JOURNAL).resolve())
    storage = str(storage)
    if "://" in storage:
        return storage
    if not storage.endswith(JOURNAL_SUFFIXES):
        raise ConfigError(
            f"hydra.sweeper.storage={storage!r} is neither a database URL (sqlite:///<path>, "
            "postgresql://..., mysql://...) nor a journal file (a path ending in .journal or "
            ".log). Leave it out for a journal file in the sweep directory."
        )
    return str(Path(storage).resolve())


def open_storage(spec: str) -> Any:
    """The Optuna storage `spec` names (see `storage_spec`); StorageError when it cannot be
    opened, with the command that upgrades a study written by an older Optuna."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.disable_default_handler()  # its lines go through Hydra's log (train.log,
    optuna.logging.enable_propagation()  # multirun.log) like every other logger's
    if is_journal(spec):
        path = Path(spec)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise StorageError(
                f"the Optuna journal {spec} cannot be opened: {err.strerror or err}. Give "
                "hydra.sweeper.storage=<a writable path ending in .journal> or a database URL."
            ) from err
    try:
        create_sqlite_file(spec)
        return optuna.storages.RDBStorage(spec)
    except RuntimeError as err:
        if "storage upgrade" in str(err):
            raise StorageError(
                f"the study in {spec} was written by an older Optuna (the optuna-2.10 sweeper "
                "this template used before), and current Optuna reads it only after its "
                f"schema is upgraded: run  optuna storage upgrade --storage {spec}  (after "
                "that, optuna 2.10 can no longer read it), then the same command again."
            ) from err
        raise StorageError(f"the Optuna storage {spec} cannot be opened: {err}") from err
    except Exception as err:  # SQLAlchemy's errors: no driver, no server, no file
        raise StorageError(
            f"hydra.sweeper.storage={spec} cannot be opened ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err}). Give a URL that opens (e.g. "
            "sqlite:///<path>/optuna.db), or leave it out for a journal file in the sweep "
            "directory."
        ) from err


def create_sqlite_file(url: str) -> None:
    """For a `sqlite:///<path>` storage whose file does not exist yet: create it empty, with
    the mode every other file of the sweep gets (0o666 & ~umask; SQLite would create it 0644
    whatever the umask, and the group could not continue the study). SQLite takes an empty
    file for a new database."""
    if not url.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):  # another process created it first
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def write_study_file(sweep_dir: str | Path, **fields: Any) -> Path:
    """`<sweep dir>/optuna_study.json`: the storage and the study (and how it searches)."""
    from trainlab.record import write_json_atomic

    path = Path(sweep_dir) / STUDY_FILE
    write_json_atomic(path, fields)
    return path


def read_study_file(sweep_dir: str | Path) -> dict[str, Any] | None:
    try:
        found = json.loads((Path(sweep_dir) / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "storage" in found else None


def load_sweep_study(sweep_dir: str | Path) -> Any | None:
    """The study of an Optuna sweep directory (None when it has none: another sweeper)."""
    import optuna

    found = read_study_file(sweep_dir)
    if found is None:
        return None
    return optuna.load_study(
        study_name=found["study_name"], storage=open_storage(str(found["storage"]))
    )

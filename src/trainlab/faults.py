"""Every fault as one paragraph a user can act on; the traceback goes to the run's log file.

A run that fails prints `Error: <what> ...` and exits non-zero: 2 for a value the user gave
(ConfigError), 1 for anything else. That line and the full traceback are written to
`<run dir>/train.log` (Hydra's log file); the traceback is printed only with
HYDRA_FULL_ERROR=1.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import traceback

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from trainlab.checks import ConfigError

MAX_CHARS = 1200  # one paragraph: a huge message (a tensor dump) is cut


def one_line(text: str) -> str:
    """Lines joined into one paragraph, blank lines and runs of spaces dropped, cut short."""
    text = re.sub(r"\s*\n\s*", " ", str(text).strip())
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


def describe_os_error(err: OSError) -> str:
    """`<path>: <the errno's meaning> (ENOSPC)`, what the file system said, in words."""
    name = errno.errorcode.get(err.errno, "") if err.errno else ""
    meaning = os.strerror(err.errno) if err.errno else str(err)
    path = err.filename if err.filename is not None else "a file of the run"
    return f"cannot write or read {path}: {meaning}" + (f" ({name})" if name else "")


def bad_value(err: BaseException) -> ConfigError | None:
    """The ConfigError behind `err`: raised by us, or by an object Hydra was building (a
    datamodule refusing its arguments)."""
    while err is not None:
        if isinstance(err, ConfigError):
            return err
        chained = isinstance(err, InstantiationException | OmegaConfBaseException)
        err = err.__cause__ if chained else None
    return None


def describe(err: BaseException) -> str:
    """One paragraph that names what failed and why."""
    err = bad_value(err) or err
    if isinstance(err, ConfigError):
        return one_line(str(err))
    if isinstance(err, OSError) and err.errno is not None:
        return one_line(describe_os_error(err))
    if isinstance(err, InstantiationException):
        cause = err.__cause__
        key = re.search(r"full_key:\s*(\S+)", str(err))
        target = re.search(r"target '([^']+)'", str(err))
        where = key.group(1) if key else "a config node"
        what = f" ({target.group(1)})" if target else ""
        because = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        return one_line(f"{where}{what} could not be built: {because}")
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        return one_line(f"the config{f' at {key}' if key else ''} is invalid: {err}")
    return one_line(f"{type(err).__name__}: {err}")


def log_traceback(err: BaseException) -> str | None:
    """Write the traceback to the file handlers of the root logger (Hydra's train.log) only;
    returns that file's path, or None when there is no log file."""
    return to_log_file("".join(traceback.format_exception(type(err), err, err.__traceback__)))


def to_log_file(text: str) -> str | None:
    """An ERROR record for the file handlers of the root logger only (the console shows
    `text` another way, or not at all); returns the file's path, None without one."""
    record = logging.LogRecord("trainlab", logging.ERROR, __file__, 0, text, None, None)
    path = None
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            path = handler.baseFilename
    return path


def full_error_asked() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_with_message(err: BaseException) -> None:
    """Print the one paragraph (and where the traceback is) and exit: 2 for a bad value,
    1 for any other fault."""
    message = describe(err)
    refused = bad_value(err) is not None
    if not refused:
        where = log_traceback(err)
        if where:
            message += f" (traceback in {where}; HYDRA_FULL_ERROR=1 prints it)"
    to_log_file(f"Error: {message}")  # printed to stderr, outside logging: train.log too
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2 if refused else 1)

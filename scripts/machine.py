"""What machine a benchmark ran on, for the first line of its table (scripts/bench*.py)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(packages: dict[str, str], load: bool = False) -> str:
    """`<cpu>, N cores visible[, load average ...]; Python x, torch y, ...`; the load average
    says how busy the (shared) machine was when the numbers were taken."""
    busy = ""
    if load:
        try:
            busy = " load average {:.2f} {:.2f} {:.2f} at the start;".format(*os.getloadavg())
        except OSError:
            busy = ""
    versions = ", ".join(f"{name} {version}" for name, version in packages.items())
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    return (
        f"{cpu_name()}, {os.cpu_count()} cores visible,{busy} OMP_NUM_THREADS={threads}; "
        f"Python {platform.python_version()}, {versions}"
    )

"""`python -m trainlab.report <sweep dir>` (and the `trainlab-report` script)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trainlab.report.summary import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainlab.report",
        description="Summarize a sweep directory: summary.csv, summary.md and PNG plots.",
    )
    parser.add_argument("sweep_dir", type=Path, help="outputs/<task>/multirun/<date>/<time>_<id>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"Error: sweep_dir={args.sweep_dir} is not a directory.", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = write_report(args.sweep_dir)
    if summary is None:
        print(
            f"Error: {args.sweep_dir} holds no job directories (sub-directories with .hydra/ "
            "or metrics.json).",
            file=sys.stderr,
        )
        return 2
    print(summary.read_text())
    return 0

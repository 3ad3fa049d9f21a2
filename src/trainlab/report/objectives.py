"""A sweep whose jobs optimize different objectives: one report per objective, never one ranking.

Each data set picks its own objective (data=digits: val/acc_best, maximized; data=diabetes:
val/mse_best, minimized; ...) and `optimized_metric=...` can be swept, so one sweep may hold
jobs whose numbers do not compare: an accuracy is not better than a squared error. Jobs are
grouped by their records' (optimized_metric, direction); with more than one group:

- each group gets the whole single-objective report of its own jobs (ranking, best,
  recommendation, configurations, plots) in objectives/<metric>-<direction>/;
- summary.md says at its top how many objectives there are and which overrides set them
  (`set_by`: the swept knobs that are constant within each group and differ between them),
  then has a section per objective; summary.csv and configs.csv list the groups one after
  the other, each ranked on its own, with its optimized_metric and direction beside it;
  configs.md a section per objective; report.json a list `objectives`, one report each,
  and no sweep-wide recommendation;
- a job whose record does not say its objective (never ran, no record yet, unreadable) goes
  with the group its overrides select (set_by), else it is listed apart, ranked with none.

No Optuna plots are drawn: a study whose trials optimize different objectives would put
them on one axis.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainlab.report.configs import CONFIG_KEY, REPEAT_KNOBS, knob
from trainlab.report.files import write_atomic
from trainlab.report.jobs import STATUS_ORDER
from trainlab.report.names import better_word, label
from trainlab.search.storage import read_study_file

log = logging.getLogger("trainlab.report")
FOLDER = "objectives"
MISSING = "(not set)"
# what a single-objective report writes in the sweep directory and a split one does not
SWEEP_WIDE_PLOTS = (
    "objective_vs_lr.png",
    "heatmap_lr_batch_size.png",
    "val_curves.png",
    "lr_batch_rule.png",
    "optuna_history.png",
    "optuna_importances.png",
)


@dataclass
class Objective:
    """The jobs of one (optimized_metric, direction): their row labels in the summary."""

    metric: str
    direction: str | None
    index: list = field(default_factory=list)
    set_by: list[str] = field(default_factory=list)  # the overrides that select it
    slug: str = ""

    @property
    def words(self) -> str:
        """`val/mse_best (best validation mean squared error), minimized: lower is better`."""
        how = f", {self.direction}d: {better_word(self.direction)}" if self.direction else ""
        return f"{self.metric} ({label(self.metric)}){how}"

    @property
    def selected_by(self) -> str:
        return " ".join(self.set_by) if self.set_by else "no override (the configs' own)"


@dataclass
class Split:
    groups: list[Objective]
    unknown: list  # row labels of the jobs whose objective is not known
    deciding: list[str]  # the knobs that tell the groups apart


def _given(row) -> dict[str, str] | None:
    listed = row.get("_overrides")
    if not isinstance(listed, tuple):
        return None
    return {knob(o): o.partition("=")[2] for o in listed}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def split(df, repeat_knobs: tuple[str, ...] = REPEAT_KNOBS) -> Split:
    """The summary's rows grouped by objective, the groups in the order of their first job."""
    order = sorted(df.index, key=lambda i: (len(str(df.at[i, "job"])), str(df.at[i, "job"])))
    said: dict[str, str] = {}  # metric -> the first direction a record gives for it
    for i in order:
        metric, direction = _text(df.at[i, "optimized_metric"]), _text(df.at[i, "direction"])
        if metric and direction:
            said.setdefault(metric, direction)
    groups: dict[tuple, Objective] = {}
    unknown = []
    for i in order:
        metric = _text(df.at[i, "optimized_metric"])
        if metric is None:
            unknown.append(i)
            continue
        direction = _text(df.at[i, "direction"]) or said.get(metric)
        groups.setdefault((metric, direction), Objective(metric, direction)).index.append(i)
    found = Split(list(groups.values()), unknown, [])
    if len(found.groups) > 1:
        _explain(df, found, repeat_knobs)
    return found


def _explain(df, found: Split, repeat_knobs: tuple[str, ...]) -> None:
    """set_by of every group, `deciding`, and the unknown rows that set_by assigns."""
    given = {i: _given(df.loc[i]) for g in found.groups for i in g.index}
    knobs: list[str] = []
    for values in given.values():
        knobs += [k for k in values or {} if k not in knobs]
    skip = set(repeat_knobs) | {CONFIG_KEY}
    for k in (k for k in knobs if k not in skip):
        per_group = []
        for g in found.groups:
            seen = {(given[i] or {}).get(k, MISSING) for i in g.index if given[i] is not None}
            per_group.append(seen)
        if all(len(s) == 1 for s in per_group) and len(set().union(*per_group)) > 1:
            found.deciding.append(k)
    for g in found.groups:
        values = (given[i] for i in g.index if given[i] is not None)
        first = next(values, None) or {}
        g.set_by = [f"{k}={first[k]}" for k in found.deciding if k in first]
    taken = set()
    for g in found.groups:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", g.metric).strip("_") + f"-{g.direction}"
        g.slug = slug if slug not in taken else f"{slug}-{len(taken)}"
        taken.add(g.slug)
    if not found.deciding:
        return
    for i in list(found.unknown):
        values = _given(df.loc[i])
        if values is None:
            continue
        mine = {k: values.get(k, MISSING) for k in found.deciding}
        fits = [g for g in found.groups if _selects(g, mine, found.deciding)]
        if len(fits) == 1:
            fits[0].index.append(i)
            found.unknown.remove(i)


def _selects(group: Objective, values: dict[str, str], deciding: list[str]) -> bool:
    own = dict(o.partition("=")[::2] for o in group.set_by)
    return all(own.get(k, MISSING) == values[k] for k in deciding)


def demoted(lines: list[str]) -> list[str]:
    """A report's headings one level down, to sit in a section of its own."""
    return [f"#{line}" if line.startswith("#") else line for line in lines]


def write_split(sweep_dir: Path, df, found: Split, knobs, ended_early: str | None) -> Path:
    """Every group's report in objectives/<slug>/, and the sweep's files side by side;
    returns the sweep's summary.md."""
    import pandas as pd

    from trainlab.report.summary import NOT_DRAWN, report_part

    n = len(found.groups)
    for name in SWEEP_WIDE_PLOTS:  # left by an earlier report of this sweep: mixed axes
        (sweep_dir / name).unlink(missing_ok=True)
    why = ", ".join(f"`{k}`" for k in found.deciding) or "the jobs' configs"
    lines = [
        f"# Sweep report: {sweep_dir.name}",
        "",
        f"- sweep directory: `{sweep_dir}`",
        f"- **{n} objectives**: its jobs optimize different metrics (set by {why}), so each "
        "objective's jobs are ranked on their own, never against another's: a section each "
        f"below, and a report each in `{FOLDER}/`",
    ]
    counts = df["status"].value_counts()
    study = read_study_file(sweep_dir)
    sections, tables, configs, reports, configs_md = [], [], [], [], []
    for k, g in enumerate(found.groups, 1):
        jobs = df[df.index.isin(g.index)]
        done = int((jobs["status"] == "completed").sum())
        where = f"{FOLDER}/{g.slug}"
        lines.append(
            f"  {k}. {g.words}: `{g.selected_by}` ({plural(len(jobs), 'job')}, {done} completed; "
            f"`{where}/`)"
        )
        out = sweep_dir / FOLDER / g.slug
        out.mkdir(parents=True, exist_ok=True)
        part = report_part(sweep_dir, out, _own_columns(jobs), knobs, ended_early, optuna=False)
        head = f"Objective {k} of {n}: {g.metric}, {g.direction}d (`{g.selected_by}`)"
        own = [
            f"# Sweep report: {sweep_dir.name}, objective {k} of {n}",
            "",
            f"- one of the {n} objectives of this sweep, ranked on its own; the whole sweep: "
            "`../../summary.md`",
            f"- its jobs: `{g.selected_by}`",
            *part.lines,
            *(f"![{p.stem}]({p.name})" for p in part.plots),
        ]
        text = "\n".join(own) + "\n"
        write_atomic(out / "summary.md", lambda tmp, text=text: Path(tmp).write_text(text))
        kept = [
            line
            for line in part.lines
            if not line.startswith(("- sweep directory:", "- **the sweep ended early**"))
        ]
        sections += [f"## {head}", "", f"- its own report: `{where}/summary.md`", *demoted(kept)]
        sections += [f"![{g.slug}: {p.stem}]({where}/{p.name})" for p in part.plots] + [""]
        meta = {"optimized_metric": g.metric, "direction": g.direction}
        tables.append(_beside(part.table, meta))
        configs.append(_beside(part.configs, meta))
        report = json.loads((out / "report.json").read_text())
        reports.append(
            {**report, "set_by": g.set_by, "jobs": [str(j) for j in jobs["job"]], "dir": where}
        )
        md = (out / "configs.md").read_text().splitlines()
        md[0] = f"# Objective {k} of {n} (`{g.selected_by}`): " + md[0].removeprefix("# ")
        configs_md += ["", *demoted(md)] if k > 1 else demoted(md)
    lines.append(
        "- jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUS_ORDER if counts.get(s))
    )
    rest = df[df.index.isin(found.unknown)]
    if len(rest):
        lines.append(
            f"- objective not known: {plural(len(rest), 'job')} whose record does not say it "
            "and whose overrides select no objective (listed at the end, ranked with none)"
        )
    if study:
        lines.append(
            f"- Optuna study `{study.get('study_name')}` in `{study.get('storage')}`; no Optuna "
            f"plots: its trials optimize {n} objectives, which one axis would mix"
        )
    if ended_early:
        lines.append(
            f"- **the sweep ended early** ({ended_early}): the jobs it was running are "
            "interrupted, the rest never ran"
        )
    lines += ["", *sections]
    if len(rest):
        lines += ["## Jobs whose objective is not known (ranked with none)", ""]
        drawn = rest[rest["overrides"] != NOT_DRAWN]
        for _, r in drawn.iterrows():
            said = r["error"] if isinstance(r["error"], str) else r.get("unreadable")
            said = f": {said}" if isinstance(said, str) else ""
            lines.append(f"- job {r['job']} ({r['status']}): `{r['overrides']}`{said}")
        if len(drawn) < len(rest):
            lines.append(f"- {len(rest) - len(drawn)} trials of the search were never drawn")
        lines.append("")
    columns = list(dict.fromkeys(c for t in tables for c in t.columns if c in rest))
    tables.append(rest[columns].assign(best=""))
    table = pd.concat(tables, ignore_index=True)
    table = table[[c for c in table if c not in ("error", "unreadable")] + ["error", "unreadable"]]
    write_atomic(sweep_dir / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))
    every = pd.concat(configs, ignore_index=True)
    write_atomic(sweep_dir / "configs.csv", lambda tmp: every.to_csv(tmp, index=False))
    md = [f"# Configurations: {n} objectives, each ranked on its own", "", *configs_md]
    write_atomic(sweep_dir / "configs.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    data = {
        "objectives": reports,
        "set_by": found.deciding,
        "unknown_objective_jobs": [str(j) for j in rest["job"]],
        "repeat_knobs": list(knobs),
        "note": f"{n} objectives, each ranked on its own: no recommendation across them",
    }
    from trainlab.record import write_json_atomic

    write_json_atomic(sweep_dir / "report.json", data)
    summary = sweep_dir / "summary.md"
    text = "\n".join(lines) + "\n"
    write_atomic(summary, lambda tmp: Path(tmp).write_text(text))
    log.info("sweep report: %s (%d objectives, a report each in %s/)", summary, n, FOLDER)
    return summary


def _beside(table, meta: dict):
    """`table` with the objective's columns after `best`/`mark` (first when it has neither)."""
    table = table.drop(columns=[c for c in meta if c in table])  # a swept optimized_metric
    at = 1 if len(table.columns) and table.columns[0] in ("best", "mark") else 0
    for offset, (name, value) in enumerate(meta.items()):
        table.insert(at + offset, name, value)
    return table


# the columns of one kind of job that another objective's jobs may lack
OWN = ("cv_mean", "cv_std", "cv_folds", "reached", "reached_value", "pruned_metric")


def _own_columns(jobs):
    """The jobs without the result columns none of them has (another task's test metrics)."""
    empty = [c for c in jobs if (c.startswith("test/") or c in OWN) and jobs[c].isna().all()]
    return jobs.drop(columns=empty)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

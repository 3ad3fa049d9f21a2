"""Repeats grouped into configurations, so that the report ranks settings, not lucky seeds.

Jobs whose overrides differ only in the *repeat knobs* are one configuration: `seed` by
default (`REPEAT_KNOBS`); a sweep names others with
`+hydra.report_repeat_knobs=[seed,data.fold]` (read back from its multirun.yaml: see
`repeat_knobs`), or `write_report(..., repeat_knobs=...)`. Per configuration:
n completed repeats, mean, std, Student-t 95% interval, min/max of the objective and mean ±
interval of each test metric (stats.py). Repeats that did not complete are counted in
columns of their own (pruned, diverged, failed, ...), never averaged in; a configuration
without a completed repeat is listed after the others. The best is marked `best`; those the
t-test cannot tell from it (p >= 0.05; paired by repeat value when both ran the same seeds)
`tied`, the rest `worse`; with fewer than 2 repeats on a side nothing is marked, and
`notes` says what can (not) be concluded.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainlab.report.jobs import STATUS_ORDER, override_value
from trainlab.report.names import better_word, label
from trainlab.report.stats import Interval, differ_p, interval

REPEAT_KNOBS = ("seed",)
CONFIG_KEY = "report_repeat_knobs"  # a setting of the report, not of the configuration
ALPHA = 0.05
COUNTED = ("pruned", "diverged", "failed", "interrupted")  # always columns, even when 0
NOT_DRAWN = "(a trial the search did not draw)"


@dataclass
class Config:
    """One configuration: its overrides (repeat knobs left out) and its repeats."""

    overrides: list[str]
    jobs: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # completed repeats' objectives
    repeats: list[tuple] = field(default_factory=list)  # their repeat-knob values
    tests: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # statuses other than completed
    mark: str = ""
    p: float = math.nan
    paired: bool | None = None

    @property
    def text(self) -> str:
        return " ".join(self.overrides) or "(no overrides)"

    @property
    def as_dict(self) -> dict[str, Any]:
        out = {}
        for override in self.overrides:
            key, _, value = override.partition("=")
            out[key.lstrip("+~")] = override_value(value)
        return out

    @property
    def n(self) -> int:
        return len(self.values)

    def stats(self) -> Interval | None:
        return interval(self.values) if self.values else None


def knob(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def known(value: Any) -> Any:
    """A repeat knob's value, None where the job does not say (NaN in the table)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def repeat_knobs(sweep_dir: Path | None = None) -> tuple[str, ...]:
    """The sweep's own repeat knobs, from its multirun.yaml: `hydra.report_repeat_knobs`
    (`+hydra.report_repeat_knobs=[seed,data.fold]` on the command line: Hydra's part of the
    config, so no job sees it) or a top-level `report_repeat_knobs` (a config that declares
    it); a list, or `a,b` text. REPEAT_KNOBS otherwise."""
    if sweep_dir is None:
        return REPEAT_KNOBS
    try:
        from omegaconf import OmegaConf

        saved = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        found = OmegaConf.select(saved, f"hydra.{CONFIG_KEY}", default=None)
        found = saved.get(CONFIG_KEY) if found is None else found
    except Exception:  # no such file, or not YAML: the default
        found = None
    if isinstance(found, str):
        found = found.split(",")
    knobs = tuple(str(k).strip() for k in found or () if str(k).strip())
    return knobs or REPEAT_KNOBS


def group(df, knobs: tuple[str, ...]) -> list[Config]:
    """The jobs of the summary table `df` as configurations, in first-job order."""
    configs: dict[tuple, Config] = {}
    tests = sorted(c for c in df if c.startswith("test/"))
    order = sorted(
        range(len(df)), key=lambda i: (len(str(df["job"].iloc[i])), str(df["job"].iloc[i]))
    )
    for _, row in df.iloc[order].iterrows():
        listed = row.get("_overrides")
        if row.get("overrides") == NOT_DRAWN:
            continue  # no overrides to group by: summary.md counts them
        if not isinstance(listed, tuple):  # its overrides could not be read
            listed = (f"(overrides unreadable: job {row['job']})",)
        kept = [o for o in listed if knob(o) not in knobs and knob(o) != CONFIG_KEY]
        config = configs.setdefault(tuple(kept), Config(kept))
        config.jobs.append(str(row["job"]))
        status = row["status"]
        objective = row.get("objective")
        if status == "completed" and objective is not None and math.isfinite(objective):
            given = {knob(o): override_value(o.partition("=")[2]) for o in listed}
            config.values.append(float(objective))
            config.repeats.append(tuple(known(given.get(k, row.get(k))) for k in knobs))
            for name in tests:
                value = row.get(name)
                if value is not None and math.isfinite(value):
                    config.tests.setdefault(name, []).append(float(value))
        else:
            status = "completed without objective" if status == "completed" else status
            config.counts[status] = config.counts.get(status, 0) + 1
    return list(configs.values())


def rank(configs: list[Config], direction: str) -> list[Config]:
    """Best mean first; configurations without a completed repeat last, in job order."""
    sign = -1.0 if direction == "maximize" else 1.0
    done = sorted((c for c in configs if c.n), key=lambda c: sign * c.stats().mean)
    return done + [c for c in configs if not c.n]


def pairs(a: Config, b: Config) -> tuple[list[float], list[float]] | None:
    """Both configurations' values ordered by repeat value, when they ran the same repeats
    (each once): a paired test then removes the seed-to-seed part of the difference."""
    if a.n < 2 or len(set(a.repeats)) != a.n or set(a.repeats) != set(b.repeats):
        return None
    if len(set(b.repeats)) != b.n or None in {v for r in a.repeats for v in r}:
        return None
    mine, theirs = (
        dict(zip(a.repeats, a.values, strict=True)),
        dict(zip(b.repeats, b.values, strict=True)),
    )
    order = sorted(mine, key=str)
    return [mine[r] for r in order], [theirs[r] for r in order]


def mark_ties(ranked: list[Config]) -> None:
    """`best` on the first configuration, `tied`/`worse` on those a t-test can compare."""
    if not ranked or not ranked[0].n:
        return
    best = ranked[0]
    best.mark = "best"
    for other in ranked[1:]:
        if not other.n:
            continue
        paired = pairs(best, other)
        with warnings.catch_warnings():  # near-constant differences: scipy warns, p stands
            warnings.simplefilter("ignore", RuntimeWarning)
            if paired is not None:
                other.p, other.paired = differ_p(*paired, paired=True), True
            else:
                other.p, other.paired = differ_p(best.values, other.values), False
            if math.isnan(other.p):
                other.paired = None
        if not math.isnan(other.p):
            other.mark = "tied" if other.p >= ALPHA else "worse"


def spread(configs: list[Config]) -> float | None:
    """The measured seed-to-seed spread: the median std of the configurations with >= 2
    completed repeats (None when none has)."""
    stds = [c.stats().std for c in configs if c.n >= 2]
    return float(statistics.median(stds)) if stds else None


def notes(ranked: list[Config], knobs: tuple[str, ...]) -> list[str]:
    """What the repeats allow to conclude, one sentence each."""
    done = [c for c in ranked if c.n]
    if not done:
        return ["no configuration completed a run: nothing to rank"]
    single = [c for c in done if c.n == 1]
    measured = spread(done)
    out = []
    what = knobs[0] if len(knobs) == 1 else "repeat"
    called = "" if len(knobs) == 1 else f" ({', '.join(knobs)})"
    if single and len(single) == len(done):
        out.append(
            f"every configuration completed once (one {what}): nothing can be concluded about "
            "the differences between them"
        )
    elif single:
        out.append(
            f"{len(single)} of {len(done)} configurations completed once: their differences cannot "
            "be tested"
        )
    if measured is None:
        out.append(
            f"the {what}-to-{what} spread{called} was not measured: repeat the sweep over "
            f"{knobs[0]}=1,2,3 to know which differences are real"
        )
    elif single:
        out.append(
            f"the measured {what}-to-{what} spread{called} (median std of "
            f"{sum(c.n >= 2 for c in done)} configurations with >= 2 repeats) is "
            f"{measured:.3g}: differences smaller than ~{2 * measured:.3g} are not meaningful"
        )
    else:
        out.append(f"the {what}-to-{what} spread{called}: median std {measured:.3g}")
    tied = [c for c in done if c.mark == "tied"]
    if tied:
        out.append(
            f"{len(tied)} configurations cannot be told apart from the best at 95% "
            f"(p >= {ALPHA}, marked tied)"
        )
    if any(c.n == 2 for c in [done[0], *tied]):
        out.append(
            f"with 2 repeats a t-test has 1 degree of freedom: `tied` then says little, and "
            f"even large differences pass as ties; {knobs[0]}=1,2,3 (or more) tells them apart"
        )
    return out


def table(ranked: list[Config]):
    """The configurations as a DataFrame, one row each, in rank order."""
    import pandas as pd

    statuses = set(COUNTED) | {s for c in ranked for s in c.counts}
    counted = sorted(statuses, key=lambda s: (STATUS_ORDER.get(s, 99), s))
    keys: list[str] = []
    for c in ranked:
        keys += [k for k in c.as_dict if k not in keys]
    tests = sorted({t for c in ranked for t in c.tests})
    rows = []
    for c in ranked:
        s = c.stats()
        row: dict[str, Any] = {"mark": c.mark, "configuration": c.text, "n": c.n}
        row.update(
            mean=s.mean if s else None,
            std=s.std if s else None,
            ci_low=s.low if s else None,
            ci_high=s.high if s else None,
            min=min(c.values) if c.values else None,
            max=max(c.values) if c.values else None,
            p_vs_best=c.p,
            p_test="paired" if c.paired else ("welch" if c.paired is False else None),
        )
        for name in tests:
            t = interval(c.tests[name]) if c.tests.get(name) else None
            row[f"{name} mean"] = t.mean if t else None
            row[f"{name} ci_low"] = t.low if t else None
            row[f"{name} ci_high"] = t.high if t else None
        row.update({s: c.counts.get(s, 0) for s in counted})
        row["jobs"] = " ".join(c.jobs)
        row.update({k: c.as_dict.get(k) for k in keys})
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.astype(object).where(df.notna(), None) if len(df) else df


def markdown(df, metric: str, direction: str, note_lines: list[str]) -> str:
    """configs.md: the notes, then the table (mean [95% CI] in one column)."""
    lines = [f"# Configurations: {metric} ({label(metric)}), {direction}d", ""]
    lines += [f"- {better_word(direction)}; mean [95% CI] over each configuration's repeats"]
    lines += [f"- {n}" for n in note_lines] + [""]
    if len(df):

        def ci(mean, low, high) -> str | None:
            if mean is None:
                return None
            if low is None or (isinstance(low, float) and math.isnan(low)):
                return f"{mean:.4g}"
            return f"{mean:.4g} [{low:.4g}, {high:.4g}]"

        shown = df[["mark", "configuration", "n"]].copy()
        shown["mean [95% CI]"] = [
            ci(*r) for r in zip(df["mean"], df["ci_low"], df["ci_high"], strict=True)
        ]
        shown["std"], shown["min"], shown["max"] = df["std"], df["min"], df["max"]
        shown["p vs best"] = df["p_vs_best"]
        for name in sorted({c.rsplit(" ", 1)[0] for c in df if c.startswith("test/")}):
            cols = [df[f"{name} {part}"] for part in ("mean", "ci_low", "ci_high")]
            shown[f"{name} [95% CI]"] = [ci(*r) for r in zip(*cols, strict=True)]
        start = list(df.columns).index("p_test") + 1
        for column in df.columns[start:]:
            if column == "jobs":
                break
            if not column.startswith("test/"):
                shown[column] = df[column]
        shown["jobs"] = df["jobs"]
        shown = shown.astype(object).where(shown.notna(), None)
        lines += [shown.to_markdown(index=False, floatfmt=".4g"), ""]
    return "\n".join(lines) + "\n"

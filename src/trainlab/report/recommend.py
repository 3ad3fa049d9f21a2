"""The report's answer: which configuration to train, how sure that is, and the command.

`recommendation` picks the best configuration of configs.py (best mean of its completed
repeats), names the ones tied with it, and gives the command that trains it (its overrides
without the repeat knobs). When its lr is the smallest or largest lr the sweep tried for its
optimizer, the optimum may lie beyond: `edge` suggests the range to sweep next, one decade
beyond the edge, log-spaced with as many points as before. `write_json` writes all of it,
the configuration table and the lr-batch-size rule (report/lr_batch_rule.py, when present)
to report.json; `summary_lines` is the section at the top of summary.md.
"""

from __future__ import annotations

import logging
import math
import shlex
from pathlib import Path
from typing import Any

from trainlab.record import write_json_atomic
from trainlab.report.configs import Config, knob
from trainlab.report.jobs import override_value

log = logging.getLogger("trainlab.report")


# options that say how the sweep ran, not what a job trained: the single run leaves them out
SWEEP_ONLY = ("hparams_search", "hydra/sweeper", "hydra/launcher", "hydra.sweeper", "hydra.")


def command(config: Config) -> str:
    """The single run that trains this configuration again: its overrides without the
    sweep's own (hparams_search=optuna, hydra.sweeper.*, the launcher)."""
    kept = [o for o in config.overrides if not _sweep_only(o)]
    return " ".join(["python train.py", *(shlex.quote(o) for o in kept)])


def _sweep_only(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key.startswith(SWEEP_ONLY)


def log_range(low: float, high: float, points: int) -> list[float]:
    """`points` values from low to high, evenly spaced in log, to 2 significant digits."""
    points = max(points, 2)
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.2g}") for i in range(points)]


def edge(config: Config, df, searched: bool = False) -> dict[str, Any] | None:
    """{knob, value, side, suggestion} when the configuration's lr is at an end of the lrs
    tried with its optimizer (every job counts, diverged and never-ran ones too)."""
    lr = config.as_dict.get("lr")
    optimizer = config.as_dict.get("optimizer")
    if searched:  # a search samples its range: the lrs it happened to try say nothing of
        return None  # the range's edge (the space is in hydra.sweeper.params)
    if not isinstance(lr, int | float) or lr <= 0 or "_overrides" not in df:
        return None
    tried_set = set()
    for listed in df["_overrides"]:
        given = dict(o.partition("=")[::2] for o in listed) if isinstance(listed, tuple) else {}
        given = {knob(k): v for k, v in given.items()}
        if optimizer is not None and str(override_value(given.get("optimizer", ""))) != str(
            optimizer
        ):
            continue
        value = _number(given.get("lr"))
        if value is not None:
            tried_set.add(value)
    tried = sorted(tried_set)
    if len(tried) < 2 or lr not in (tried[0], tried[-1]):
        return None
    side = "largest" if lr == tried[-1] else "smallest"
    low, high = (lr, lr * 10) if side == "largest" else (lr / 10, lr)
    where = f" for optimizer={optimizer}" if optimizer is not None else ""
    if searched:  # a search draws lrs from a range: widen it
        low, high = (tried[0], high) if side == "largest" else (low, tried[-1])
        suggestion = f"widen the lr search range{where} to [{low:.2g}, {high:.2g}]"
    else:
        values = ",".join(f"{v:g}" for v in log_range(low, high, len(tried)))
        suggestion = (
            f"sweep lr one decade {'up' if side == 'largest' else 'down'}{where}: lr={values}"
        )
    return {"knob": "lr", "value": lr, "side": side, "tried": tried, "suggestion": suggestion}


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


UNRELIABLE = ("diverged", "failed")


def unreliable(config: Config) -> int:
    """How many of the configuration's repeats diverged or failed."""
    return sum(config.counts.get(s, 0) for s in UNRELIABLE)


def recommendation(ranked: list[Config], df, knobs: tuple[str, ...]) -> dict[str, Any] | None:
    """The best configuration as report.json's `recommended` (None when none completed):
    the best mean among those whose repeats all ran to the end (a configuration that
    diverged in some seeds sits at the edge of stability); the best mean overall when every
    configuration lost some. `passed_over` names a better mean that was not taken, and why."""
    done = [c for c in ranked if c.n]
    if not done:
        return None
    clean = [c for c in done if not unreliable(c)]
    best = (clean or done)[0]
    passed = []
    for other in done:
        if other is best:
            break
        lost = unreliable(other)
        passed.append(
            f"`{other.text}` has a better mean ({other.stats().mean:.4g}, {other.n} completed) "
            f"but {lost} of its {other.n + lost} repeats diverged or failed"
        )
    s = best.stats()
    repeats = [
        " ".join(f"{k}={v}" for k, v in zip(knobs, r, strict=True) if v is not None)
        for r in best.repeats
    ]
    repeats = [r for r in repeats if r]
    searched = "trial" in df and df["trial"].notna().any()
    return {
        "configuration": best.as_dict,
        "overrides": best.text,
        "mean": s.mean,
        "ci": [s.low, s.high] if s.n > 1 else None,
        "std": s.std if s.n > 1 else None,
        "n": s.n,
        "repeats": repeats,
        "jobs": best.jobs,
        "tied": [c.text for c in ranked if c.mark == "tied"],
        "command": command(best),
        "edge": edge(best, df, searched),
        "passed_over": passed,
        "lost_repeats": unreliable(best),
    }


def lr_batch_rule(jobs, direction: str, sweep_dir: Path) -> dict[str, Any] | None:
    """report/lr_batch_rule.py's finding, when that module is there (None otherwise)."""
    try:
        from trainlab.report.lr_batch_rule import lr_batch_rule as rule
    except (ImportError, AttributeError):
        return None
    try:
        return rule(jobs, direction, sweep_dir)
    except Exception as err:  # one finding must not cost the whole report
        log.warning("lr-batch-size rule: %s: %s", type(err).__name__, err)
        return None


def write_json(path: Path, recommended, table, notes: list[str], rule, meta: dict) -> None:
    """report.json, atomically: what summary.md says, for scripts."""
    configs = table.to_dict(orient="records") if len(table) else []
    data = {**meta, "recommended": recommended, "notes": notes, "configs": configs}
    data["edge"] = (recommended or {}).get("edge")
    data["lr_batch_rule"] = rule
    write_json_atomic(path, data)


def rule_lines(rule: dict[str, Any] | None) -> list[str]:
    """The lr-batch-size rule in one line (lr_batch_rule.py's keys, where present)."""
    if not isinstance(rule, dict):
        return []
    alpha, ci = rule.get("alpha"), rule.get("alpha_ci")
    if not isinstance(alpha, int | float):
        return []
    line = f"- lr vs batch size: the best lr goes as batch_size ** {alpha:.2f}"
    if isinstance(ci, list | tuple) and len(ci) == 2:
        line += f" (95% CI [{ci[0]:.2f}, {ci[1]:.2f}])"
    flagged = rule.get("flagged") or {}
    few = (rule.get("repeats") or {}).get("min", 3) < 3
    if flagged:
        line += (
            f"; but the best lr of batch size {', '.join(map(str, flagged))} is the best swept "
            "lr, not a fitted peak (at the range's edge, or no peak): widen the lr range "
            "there before using the rule"
        )
    elif rule.get("use"):
        line += f"; to train at another batch size: `{rule['use']}`"
    if few:
        line += "; fewer than 3 repeats per point: the interval is rough"
    return [line + " (report.json: lr_batch_rule)"]


def summary_lines(
    recommended: dict[str, Any] | None, notes: list[str], metric: str, rule=None
) -> list[str]:
    """The recommendation section at the top of summary.md."""
    lines = ["## Recommendation", ""]
    if recommended is None:
        return lines + ["- none: no configuration completed a run", *rule_lines(rule), ""]
    r = recommended
    spread = f" (95% CI [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}])" if r["ci"] else ""
    lines.append(
        f"- **`{r['overrides']}`**: {metric} {r['mean']:.4g}{spread}, mean of {r['n']} "
        f"repeat{'s' if r['n'] != 1 else ''}"
        + (f" ({', '.join(r['repeats'])})" if r["repeats"] and any(r["repeats"]) else "")
    )
    if r.get("lost_repeats"):
        lines.append(
            f"- but {r['lost_repeats']} of its repeats diverged or failed (every configuration "
            "lost some): it sits at the edge of stability; a smaller lr is the safer choice"
        )
    lines += [f"- not taken: {p}" for p in r.get("passed_over", [])]
    lines.append(f"- train it: `{r['command']}`")
    if r["tied"]:
        lines.append(
            "- tied with it (not distinguishable at 95%): " + ", ".join(f"`{t}`" for t in r["tied"])
        )
    if r["edge"]:
        e = r["edge"]
        lines.append(
            f"- its lr {e['value']:g} is the {e['side']} lr tried: the best may lie beyond; "
            f"{e['suggestion']}"
        )
    lines += [f"- {n}" for n in notes]
    lines += rule_lines(rule)
    lines.append("- every configuration, mean ± 95% CI: configs.md (configs.csv, report.json)")
    return lines + [""]

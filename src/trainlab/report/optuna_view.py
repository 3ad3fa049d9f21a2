"""The Optuna view of a sweep: how the search converged, and which parameters mattered.

Drawn when the sweep directory names its study (`optuna_study.json`, written by the Optuna
sweeper) and the study has at least MIN_TRIALS ended trials; fewer say nothing a reader
could trust. Two PNGs, with matplotlib like the other plots (optuna.visualization needs
plotly, which the template does not install):

- optuna_history.png: each completed trial's objective, and the best so far, by trial
  number; a pruned trial is marked at its last intermediate value (a partial result, drawn
  apart from the final ones), a failed trial (diverged, failed) at the bottom.
- optuna_importances.png: `optuna.importance.get_param_importances` over the completed
  trials; left out, with the reason, when there are fewer than 2 parameters or too few
  completed trials, or when Optuna cannot compute them.

optuna is imported only for a sweep that has a study, so that the report of a grid sweep
works where optuna is not installed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainlab.report.names import better_word, label
from trainlab.report.plots_data import save_png
from trainlab.search.storage import read_study_file

log = logging.getLogger("trainlab.report")

MIN_TRIALS = 8  # ended trials (completed, pruned, failed) before anything is drawn
MIN_COMPLETED_FOR_IMPORTANCE = 5


def optuna_plots(sweep_dir: Path, metric: str) -> tuple[list[Path], list[str], str | None]:
    """(the PNGs written, why any was not, a line naming the study) for `sweep_dir`;
    ([], [], None) for a sweep without a study file (another sweeper). Never raises: a
    study that cannot be opened is a reason, not a failed report."""
    found = read_study_file(sweep_dir)
    if found is None:
        return [], [], None
    name, storage = found.get("study_name"), found.get("storage")
    where = f"Optuna study `{name}` in `{storage}` (`optuna-dashboard {storage}`)"
    try:
        from trainlab.search.storage import load_sweep_study

        study = load_sweep_study(sweep_dir)
    except Exception as err:  # no optuna, a storage that no longer opens, a renamed study
        why = f"the study cannot be opened ({type(err).__name__}: {err})"
        log.warning("sweep report: no Optuna plots: %s", why)
        return [], [why], where
    plots, reasons = draw(study, sweep_dir, metric)
    for why in reasons:
        log.info("sweep report: %s", why)
    return plots, reasons, where


def draw(study: Any, sweep_dir: Path, metric: str) -> tuple[list[Path], list[str]]:
    """The two PNGs of `study`, or the reasons they were not drawn."""
    from optuna.trial import TrialState

    ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if len(ended) < MIN_TRIALS:
        return [], [f"no Optuna plots: {len(ended)} trials ended, {MIN_TRIALS} needed"]
    if len(study.directions) != 1:
        return [], [f"no Optuna plots: the study has {len(study.directions)} objectives"]
    maximize = study.direction.name == "MAXIMIZE"
    plots = [plot_history(ended, sweep_dir, metric, maximize, TrialState)]
    reasons: list[str] = []
    importances, why = param_importances(study, TrialState)
    if importances is None:
        reasons.append(f"no optuna_importances.png: {why}")
    else:
        plots.append(plot_importances(importances, sweep_dir, metric))
    return plots, reasons


def plot_history(trials: list, sweep_dir: Path, metric: str, maximize: bool, states) -> Path:
    import matplotlib.pyplot as plt

    trials = sorted(trials, key=lambda t: t.number)
    done = [t for t in trials if t.state == states.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == states.PRUNED and t.intermediate_values]
    failed = [t for t in trials if t.state == states.FAIL]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if done:
        best, best_so_far = None, []
        for t in done:
            better = best is None or (t.value > best if maximize else t.value < best)
            best = t.value if better else best
            best_so_far.append(best)
        numbers = [t.number for t in done]
        ax.scatter(numbers, [t.value for t in done], color="tab:blue", label="completed", zorder=3)
        ax.step(numbers, best_so_far, where="post", color="tab:green", label="best so far")
    last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            last,
            marker="v",
            facecolors="none",
            edgecolors="tab:orange",
            label="pruned (last intermediate value)",
            zorder=3,
        )
    if failed:
        shown = [t.value for t in done] + last
        worst = (min if maximize else max)(shown, default=0.0)
        ax.scatter(
            [t.number for t in failed],
            [worst] * len(failed),
            marker="x",
            color="red",
            label="failed or diverged",
            zorder=3,
        )
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{label(metric)} ({better_word('maximize' if maximize else 'minimize')})")
    ax.set_title(f"Optuna search: {label(metric)} by trial ({'max' if maximize else 'min'}imized)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, sweep_dir / "optuna_history.png")


def param_importances(study: Any, states) -> tuple[dict[str, float] | None, str | None]:
    """({param: importance}, None), or (None, why there are none)."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
    if len(done) < MIN_COMPLETED_FOR_IMPORTANCE:
        return None, f"{len(done)} completed trials, {MIN_COMPLETED_FOR_IMPORTANCE} needed"
    params = {name for t in done for name in t.params}
    if len(params) < 2:
        return None, f"the search has {len(params)} parameter(s): nothing to compare"
    try:
        return optuna.importance.get_param_importances(study), None
    except Exception as err:  # e.g. a search space that changed between trials
        return None, f"Optuna cannot compute them ({type(err).__name__}: {err})"


def plot_importances(importances: dict[str, float], sweep_dir: Path, metric: str) -> Path:
    import matplotlib.pyplot as plt

    ranked = sorted(importances.items(), key=lambda kv: kv[1])  # the largest at the top
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(ranked) + 1.8))
    ax.barh([name for name, _ in ranked], [value for _, value in ranked], color="tab:blue")
    for i, (_, value) in enumerate(ranked):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (share of the total)")
    ax.set_xlim(0, max(1e-9, max(v for _, v in ranked)) * 1.15)
    ax.set_title(f"Which parameters mattered for {label(metric)}\n(completed Optuna trials)")
    return save_png(fig, sweep_dir / "optuna_importances.png")

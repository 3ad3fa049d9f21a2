"""scripts/mup_transfer.py's reading of a grid: the best lr between grid points, the shift
across widths, the loss at the carried-over lr (the runs themselves are train.py's)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mup_transfer.py"
spec = importlib.util.spec_from_file_location("mup_transfer", SCRIPT)
mup_transfer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mup_transfer)


def bowl(best: float, lrs: list[float], floor: float = 2.0) -> list[float]:
    """A loss that is a parabola in log lr with its minimum at `best`."""
    return [floor + 0.1 * math.log(lr / best) ** 2 for lr in lrs]


LRS = [1e-3 * 2**k for k in range(6)]


@pytest.mark.parametrize("best", [1.7e-3, 3e-3, 5.5e-3, 2.2e-2])
def test_the_best_lr_of_a_parabola_is_found_between_the_grid_points(best):
    found, edge = mup_transfer.fitted_best(LRS, bowl(best, LRS))
    assert found == pytest.approx(best, rel=1e-9) and not edge


def test_a_best_lr_at_the_edge_of_the_grid_is_flagged():
    assert mup_transfer.fitted_best(LRS, bowl(1e-4, LRS)) == (LRS[0], True)
    assert mup_transfer.fitted_best(LRS, bowl(1.0, LRS)) == (LRS[-1], True)
    diverged = bowl(4e-3, LRS)
    diverged[-1] = math.inf  # a diverged neighbour: the grid's best, not a fit through inf
    diverged[-2] = 1.0
    assert mup_transfer.fitted_best(LRS, diverged) == (LRS[-2], False)


def test_the_summary_reads_the_shift_and_the_carried_over_loss(monkeypatch):
    widths = [32, 64, 128, 256]
    monkeypatch.setitem(mup_transfer.CASES, "toy", {"lrs": LRS, "widths": widths})
    best = {"sp": {32: 8e-3, 64: 4e-3, 128: 2e-3, 256: 1e-3}, "mup": dict.fromkeys(widths, 8e-3)}
    losses = {n: {w: dict(zip(LRS, bowl(b[w], LRS), strict=True)) for w in widths}
              for n, b in best.items()}  # fmt: skip
    summary = mup_transfer.summarize("toy", losses)
    assert summary["sp"]["shift"] == pytest.approx(8.0)
    assert summary["mup"]["shift"] == pytest.approx(1.0)
    assert summary["sp"]["carried_lr"] == summary["mup"]["carried_lr"] == 8e-3
    assert summary["mup"]["carried_loss_pct"] == pytest.approx(0.0, abs=1e-12)
    expected = 100 * (0.1 * math.log(8) ** 2) / 2.0  # at 8x the best lr, against the floor 2.0
    assert summary["sp"]["carried_loss_pct"] == pytest.approx(expected)

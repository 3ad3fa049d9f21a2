"""scripts/critical_batch.py's fit of the steps-samples trade-off (the runs are train.py's):
S = S_min (1 + B_crit / B) recovered from steps at several batch sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "critical_batch.py"
spec = importlib.util.spec_from_file_location("critical_batch", SCRIPT)
critical_batch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(critical_batch)


@pytest.mark.parametrize("s_min, b_crit", [(100.0, 50.0), (40.0, 700.0), (1000.0, 3.0)])
def test_the_fit_recovers_s_min_and_the_critical_batch(s_min, b_crit):
    batches = [8, 16, 32, 64, 128, 256]
    steps = [s_min * (1 + b_crit / b) for b in batches]
    fitted_s_min, fitted_b_crit = critical_batch.fit_critical_batch(batches, steps)
    assert fitted_s_min == pytest.approx(s_min)
    assert fitted_b_crit == pytest.approx(b_crit)
    # the paper's form holds at every batch: (S/S_min - 1)(E/E_min - 1) = 1
    for b, s in zip(batches, steps, strict=True):
        e, e_min = s * b, s_min * b_crit
        assert (s / s_min - 1) * (e / e_min - 1) == pytest.approx(1.0)


def test_steps_that_do_not_level_off_are_refused():
    with pytest.raises(SystemExit, match="do not level off"):
        critical_batch.fit_critical_batch([8, 16, 32], [8000 / b - 50 for b in (8, 16, 32)])

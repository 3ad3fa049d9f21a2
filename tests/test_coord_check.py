"""scripts/coord_check.py on tiny ladders: it runs both parametrizations, draws the PNG, and
under μP the activations stay flat where SP's grow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def coord_check(*arguments: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "scripts" / "coord_check.py"), *arguments, f"out={out}"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def growth_table(stdout: str) -> dict[str, tuple[float, float]]:
    """{layer: (sp growth, mup growth)} from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] != "layer":
            try:
                rows[parts[0]] = (float(parts[1]), float(parts[2]))
            except ValueError:
                continue
    return rows


def test_the_mlp_ladder_is_flat_under_mup_and_grows_under_sp(tmp_path):
    out = tmp_path / "coord.png"
    result = coord_check(
        "model=mlp", "model.net.hidden_sizes=[32,32]", "lr=0.01", "steps=5", "factors=1,4",
        "parametrization=mup",  # both are drawn whichever is given
        out=out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.stat().st_size > 10_000
    table = growth_table(result.stdout)
    assert list(table) == ["layers.1", "layers.3", "layers.5"]  # every weight layer
    sp, mup = table["layers.5"]  # the output: SP's update grows with width, μP's does not
    assert sp > 2.0 and 0.75 < mup < 1.35
    assert "width 128 / width 32" in result.stdout


@pytest.mark.slow  # about 25 s: the default suite stays near 10 minutes
def test_the_gpt_ladder_records_every_weight_layer(tmp_path):
    out = tmp_path / "coord.png"
    result = coord_check(
        "model=gpt", "model.net.n_embd=16", "model.net.n_head=2", "model.net.n_layer=1",
        "data.block_size=16", "data.max_bytes=20000", "steps=2", "factors=1,2", out=out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    layers = set(growth_table(result.stdout))
    assert {"wte", "blocks.0.attn.qkv", "blocks.0.mlp.proj", "lm_head"} <= layers
    sp, mup = growth_table(result.stdout)["blocks.0.attn.qkv"]
    assert sp > 1.2 and abs(mup - 1) < 0.2  # SP's fixed 0.02 init grows with width at once


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["model=cnn"], "trainlab.models.nets.CNN does not have"),
        (["steps=0"], "steps is a whole number >= 1"),
        (["factors=1"], "at least two positive widths"),
        (["compile=true"], "compile=true is not available"),
        (["lr=abc"], "lr"),
    ],
)
def test_what_it_cannot_check_is_one_line_and_exit_2(arguments, says, tmp_path):
    result = coord_check(*arguments, out=tmp_path / "coord.png")
    assert result.returncode == 2
    assert result.stderr.startswith("Error:") and says in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "coord.png").exists()

"""μP (parametrization=mup): per-group lr and weight decay by role and optimizer family, the
networks' init and forward multipliers, sp left as it was, composition with weight-decay
groups and schedules, the record, and exact resume."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from conftest import run_cli
from trainlab.models.gpt import GPT
from trainlab.models.nets import MLP
from trainlab.models.width import Parametrization, parametrization_of
from trainlab.optim import build_optimizer
from trainlab.optim.muon import MuonWithAdamW
from trainlab.optim.schedules import SchedulerSpec
from trainlab.rundir import read_record as record_of


def mlp(width: int, parametrization: str = "mup", base_width: int = 32, **kwargs) -> MLP:
    torch.manual_seed(0)
    return MLP(64, [width, width], 10, parametrization=parametrization, base_width=base_width)


def gpt(width: int, parametrization: str = "mup", base_width: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(
        vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=width,
        parametrization=parametrization, base_width=base_width,
    )  # fmt: skip


def lrs(optimizer) -> dict[str, tuple[float, float]]:
    """{group name: (lr, weight decay)}"""
    return {g.get("name", "all"): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}


ADAM = functools.partial(torch.optim.Adam, lr=1e-3, weight_decay=1e-4)
ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1)
SGD = functools.partial(torch.optim.SGD, lr=0.1, weight_decay=1e-4)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_adam_divides_the_hidden_lr_by_m_and_multiplies_its_coupled_decay(m):
    built = lrs(build_optimizer(mlp(32 * m), ADAM, "all"))
    if m == 1:  # at the base width: the standard groups, untouched
        assert built == {"all": (1e-3, 1e-4)}
        return
    assert built == {
        "input+vector+output": (1e-3, 1e-4),
        "hidden": (pytest.approx(1e-3 / m), pytest.approx(1e-4 * m)),
    }


@pytest.mark.parametrize("m", [2, 4])
def test_adamw_keeps_decoupled_decay_and_composes_with_the_decay_groups(m):
    built = lrs(build_optimizer(mlp(32 * m), ADAMW, "split"))
    assert built == {
        "decay.input+output": (1e-3, 0.1),
        "decay.hidden": (pytest.approx(1e-3 / m), 0.1),
        "no_decay.vector": (1e-3, 0.0),
    }


@pytest.mark.parametrize("m", [2, 4])
def test_sgd_multiplies_input_output_and_vector_lrs_by_m_and_keeps_the_hidden(m):
    built = lrs(build_optimizer(mlp(32 * m), SGD, "all"))
    assert built == {
        "input+vector+output": (pytest.approx(0.1 * m), pytest.approx(1e-4 / m)),
        "hidden": (0.1, 1e-4),
    }


@pytest.mark.parametrize(("adjust", "hidden"), [("original", 1.0), ("match_rms_adamw", 0.25)])
def test_muon_follows_its_own_rule_and_its_adamw_part_adams(adjust, hidden):
    factory = functools.partial(MuonWithAdamW, lr=0.02, adjust_lr_fn=adjust, adamw_lr_ratio=0.1)
    built = lrs(build_optimizer(mlp(128), factory, "all"))  # m = 4
    assert built["muon.hidden"][0] == pytest.approx(0.02 * hidden)
    assert built["adamw.input+vector+output"][0] == pytest.approx(0.002)  # the ratio kept


def test_the_gpts_groups_under_mup():
    built = lrs(build_optimizer(gpt(128), ADAMW, "split"))  # m = 4
    # the tied embedding/head, the positions, biases and norms: Adam's lr unchanged, never
    # decayed (one group: the same multipliers)
    assert built == {
        "decay.hidden": (pytest.approx(2.5e-4), 0.1),
        "no_decay.output+input+vector": (1e-3, 0.0),
    }


@pytest.mark.parametrize("m", [1, 2, 4])
def test_init_and_forward_multipliers_at_each_width(m):
    sp, mu = mlp(32 * m, "sp"), mlp(32 * m)
    assert mu.output_multiplier == 1 / m
    # the head keeps the base width's scale (x sqrt(m) over torch's 1/sqrt(fan_in)); hidden
    # layers keep torch's 1/fan_in variance, which is μP's
    assert torch.allclose(mu.layers[-1].weight, sp.layers[-1].weight * math.sqrt(m))
    assert torch.equal(mu.layers[3].weight, sp.layers[3].weight)
    x = torch.randn(5, 64)
    hidden = sp.layers[:-1](x)
    assert torch.allclose(mu(x), mu.layers[-1](hidden / m), atol=1e-6)

    g = gpt(32 * m)
    assert g.output_multiplier == 1 / m
    head = g.blocks[0].attn
    d_head = 32 * m // 2
    # μP's 1/d_head, equal to the usual 1/sqrt(d_head) at the base width
    expected = math.sqrt(16) / d_head
    assert (head.scale or 1 / math.sqrt(d_head)) == pytest.approx(expected)
    assert float(head.qkv.weight.detach().std()) == pytest.approx(0.02 / math.sqrt(m), rel=0.1)
    assert float(g.wte.weight.detach().std()) == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("parametrization, m", [("sp", 1), ("mup", 1), ("mup", 4)])
def test_the_gpt_output_multiplier_scales_the_logits_and_mup_divides_it_by_m(parametrization, m):
    def built(alpha: float) -> GPT:
        torch.manual_seed(0)
        return GPT(
            vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16 * m,
            parametrization=parametrization, base_width=16, output_multiplier=alpha,
        )  # fmt: skip

    idx = torch.randint(0, 64, (2, 8))
    plain, scaled = built(1.0), built(8.0)
    assert scaled.output_multiplier == pytest.approx(8.0 / m)
    # the head is linear without bias: logits scale with α, nothing else changes
    assert torch.allclose(scaled(idx), 8.0 * plain(idx), atol=1e-5)


@pytest.mark.parametrize("alpha", [0, -1.0, float("inf"), float("nan"), True, "big"])
def test_a_gpt_output_multiplier_that_is_not_a_positive_number_is_refused(alpha):
    with pytest.raises(ValueError, match=r"output_multiplier=.* is not a positive number"):
        GPT(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16, output_multiplier=alpha)


def test_sp_is_unchanged_bit_for_bit_and_mup_at_its_base_width_is_sp():
    torch.manual_seed(0)
    plain = GPT(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=64)
    for other in (gpt(64, "sp", base_width=16), gpt(64, "mup", base_width=64)):
        for (name, a), (_, b) in zip(
            plain.state_dict().items(), other.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
        idx = torch.randint(0, 256, (2, 16))
        assert torch.equal(plain(idx), other(idx))
        assert lrs(build_optimizer(other, ADAMW, "split")) == lrs(
            build_optimizer(plain, ADAMW, "split")
        )
    assert parametrization_of(gpt(64, "sp", base_width=16)).as_plan() == {
        "parametrization": "sp",
        "base_width": None,
        "width_multiplier": 1.0,
    }


def test_a_one_cycle_schedule_peaks_each_group_at_its_own_share():
    optimizer = build_optimizer(mlp(128), ADAM, "all")  # m = 4
    spec = SchedulerSpec(
        functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3),
        interval="step",
        length_arg="total_steps",
    )
    scheduler = spec.lightning_config(optimizer, 100)["scheduler"]
    peaks = {g["name"]: g["max_lr"] for g in optimizer.param_groups}
    assert peaks == {"input+vector+output": 1e-3, "hidden": pytest.approx(2.5e-4)}
    assert scheduler.get_last_lr()[1] == pytest.approx(scheduler.get_last_lr()[0] / 4)


def test_parametrization_refuses_what_it_cannot_be():
    with pytest.raises(ValueError, match="parametrization='mip' is not allowed"):
        Parametrization("mip", 64)
    with pytest.raises(ValueError, match="base_width=0 is not allowed"):
        Parametrization("mup", 64, 0)
    assert Parametrization("mup", 64, 16).multiplier == 4.0


# --- through train.py -----------------------------------------------------------------------

MUP_RUN = ("parametrization=mup", "model.net.hidden_sizes=[512,512]", "logger=none")


def test_the_plan_and_the_groups_are_recorded(tmp_path):
    result = run_cli(*MUP_RUN, "max_epochs=1", "test=false", f"hydra.run.dir={tmp_path}/r")
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(tmp_path / "r")
    plan = record["plan"]
    assert (plan["parametrization"], plan["base_width"], plan["width_multiplier"]) == (
        "mup",
        256,
        2.0,
    )
    groups = {g["name"]: g for g in record["trained"]["optimizer"]["param_groups"]}
    assert groups["hidden"]["lr"] == pytest.approx(5e-4)
    assert groups["hidden"]["lr_multiplier"] == 0.5
    # evaluated under another parametrization, the same weights would give other outputs
    best = record["trained"]["best_checkpoint"]
    wrong = run_cli(
        "train=false", f"ckpt_path={best}", "model.net.hidden_sizes=[512,512]",
        f"hydra.run.dir={tmp_path}/e",
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "trained with parametrization=mup base_width=256" in wrong.stderr


@pytest.mark.slow  # two runs and a resume end to end
def test_a_resumed_mup_run_ends_where_an_unbroken_one_does(tmp_path):
    args = (*MUP_RUN, "optimizer=sgd", "lr=0.05", "test=false", "deterministic=true")
    unbroken = run_cli(*args, "max_epochs=4", f"hydra.run.dir={tmp_path}/a")
    first = run_cli(*args, "max_epochs=2", f"hydra.run.dir={tmp_path}/b")
    assert unbroken.returncode == first.returncode == 0, first.stderr[-3000:]
    resumed = run_cli(f"resume={tmp_path}/b", "max_epochs=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)
    for name, weight in a["state_dict"].items():
        assert torch.equal(weight, b["state_dict"][name]), name
    assert [g["lr"] for g in a["optimizer_states"][0]["param_groups"]] == [
        g["lr"] for g in b["optimizer_states"][0]["param_groups"]
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer=lamb"], "optimizer=lamb sizes each step by the weight's own norm"),
        (["optimizer=lars"], "optimizer=lars sizes each step"),
        (["optimizer=adafactor"], "optimizer=adafactor sizes each step"),
        (["model.net.hidden_sizes=[512,128]"], "hidden_sizes=[512, 128] are of different"),
    ],
)
def test_mup_refuses_relative_step_optimizers_and_uneven_hidden_layers(
    tmp_path, overrides, message
):
    done = run_cli("model=mlp", "parametrization=mup", *overrides, f"hydra.run.dir={tmp_path}/r")
    assert done.returncode == 2, done.stderr[-1500:]
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_gpt_that_cannot_be_built_is_refused_with_exit_code_2(tmp_path):
    for i, bad in enumerate(("model.net.output_multiplier=-1", "model.net.n_embd=66")):
        done = run_cli("model=gpt", bad, f"hydra.run.dir={tmp_path}/r{i}")
        assert done.returncode == 2, done.stderr[-1500:]
        assert bad.split("=")[0] in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("factory", [ADAMW, functools.partial(MuonWithAdamW, lr=0.02)])
def test_compile_leaves_the_groups_and_mup_multipliers_as_without_it(factory):
    """compile=true wraps the net (run.py: module.net = torch.compile(net)), whose parameter
    names then start with `_orig_mod.`: roles, decay groups and Muon's matrices must not see
    a different network."""

    class Holder(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

    def groups(net) -> list[tuple]:
        built = build_optimizer(Holder(net), factory, "auto")
        return [(g.get("name"), g["lr"], len(g["params"])) for g in built.param_groups]

    net = gpt(64)
    assert groups(torch.compile(net)) == groups(net)
    assert any(name and "hidden" in name for name, _lr, _n in groups(net))

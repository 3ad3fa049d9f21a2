"""The batch plan: global batch, micro batch, accumulation, lr scaling, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainlab.checks import ConfigError
from trainlab.plan import make_plan, optimizer_steps_per_epoch
from trainlab.run import train


def plan(**kw):
    args = dict(
        batch_size=64,
        micro_batch_size=None,
        world_size=1,
        lr=0.001,
        lr_scaling="none",
        base_batch_size=64,
    )
    return make_plan(**{**args, **kw})


def test_accumulation_is_derived_from_the_global_batch():
    p = plan(batch_size=512, micro_batch_size=64)
    assert (p.micro_batch_size, p.accumulate_grad_batches) == (64, 8)
    p = plan(batch_size=512, world_size=2)
    assert (p.micro_batch_size, p.accumulate_grad_batches) == (256, 1)
    p = plan(batch_size=512, micro_batch_size=32, world_size=8)
    assert p.accumulate_grad_batches == 2


@pytest.mark.parametrize(
    ("rule", "expected"), [("none", 0.001), ("linear", 0.004), ("sqrt", 0.002)]
)
def test_lr_scaling_rules(rule, expected):
    p = plan(batch_size=1024, lr=0.001, lr_scaling=rule, base_batch_size=256)
    assert p.lr == 0.001 and p.lr_effective == pytest.approx(expected)
    assert p.lr_scaling_exponent is None


@pytest.mark.parametrize(
    ("exponent", "expected"), [(1, 0.004), (0.5, 0.002), (0.25, 0.001 * 2**0.5), (-1, 0.00025)]
)
def test_power_rule_scales_by_the_given_exponent_and_records_it(exponent, expected):
    p = plan(
        batch_size=1024,
        lr=0.001,
        lr_scaling="power",
        base_batch_size=256,
        lr_scaling_exponent=exponent,
    )
    assert p.lr_effective == pytest.approx(expected)
    assert p.as_dict()["lr_scaling_exponent"] == exponent and p.lr_scaling == "power"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_size=100, micro_batch_size=30), "30 x 1 = 30 does not divide 100"),
        (
            dict(batch_size=512, micro_batch_size=48, world_size=2),
            "48 x 2 = 96 does not divide 512",
        ),
        (dict(batch_size=100, world_size=8), "batch_size=100 cannot be shared by 8 devices"),
        (dict(micro_batch_size=0), "micro_batch_size=0"),
        (dict(base_batch_size=0), "base_batch_size=0"),
        (dict(lr_scaling="cubic"), "lr_scaling='cubic'"),
        (dict(lr_scaling="power"), "lr_scaling=power needs lr_scaling_exponent"),
        (dict(lr_scaling="sqrt", lr_scaling_exponent=0.7), "not allowed with lr_scaling=sqrt"),
        (dict(lr_scaling="linear", lr_scaling_exponent=1), "linear is exponent 1"),
        (dict(lr_scaling="none", lr_scaling_exponent=0.5), "lr_scaling_exponent=0.5"),
        (dict(lr_scaling="power", lr_scaling_exponent=3), "from -2 to 2"),
        (dict(lr_scaling="power", lr_scaling_exponent=float("nan")), "lr_scaling_exponent=nan"),
        (dict(lr_scaling="power", lr_scaling_exponent=True), "lr_scaling_exponent=true"),
        (dict(lr_scaling="power", lr_scaling_exponent="0.5"), "lr_scaling_exponent='0.5'"),
    ],
)
def test_plans_that_cannot_work_are_refused_with_the_numbers(kwargs, message):
    with pytest.raises(ConfigError, match=None) as err:
        plan(**kwargs)
    assert message in str(err.value)


def test_non_dividing_message_suggests_a_micro_batch_that_works():
    with pytest.raises(ConfigError) as err:
        plan(batch_size=100, micro_batch_size=30)
    assert "micro_batch_size=25" in str(err.value)


def run_and_read(compose_in, *overrides):
    # digits: the sample and step counts of the tests below are its (1167 training samples)
    cfg = compose_in("data=digits", "logger=none", "callbacks=checkpoint", *overrides)
    train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def test_micro_batches_and_accumulation_reach_lightning(compose_in):
    record = run_and_read(compose_in, "batch_size=512", "micro_batch_size=64", "max_epochs=2")
    assert record["plan"]["accumulate_grad_batches"] == 8
    assert record["plan"]["world_size"] == 1 and record["plan"]["micro_batch_size"] == 64
    # 1167 training samples: 19 micro batches of 64 -> 3 optimizer steps per epoch
    expected = optimizer_steps_per_epoch(
        1167,
        make_plan(
            batch_size=512,
            micro_batch_size=64,
            world_size=1,
            lr=0.001,
            lr_scaling="none",
            base_batch_size=64,
        ),
    )
    assert expected == 3
    assert record["trained"]["optimizer_steps"] == 2 * expected


def test_scaled_lr_reaches_the_optimizer_and_onecycle(compose_in):
    record = run_and_read(
        compose_in,
        "batch_size=256",
        "lr=0.001",
        "lr_scaling=linear",
        "base_batch_size=64",
        "optimizer=sgd_momentum",
        "max_epochs=1",
    )
    assert record["plan"]["lr_effective"] == pytest.approx(0.004)
    assert record["hparams"]["lr"] == 0.001  # as the user gave it
    assert [g["lr"] for g in record["trained"]["optimizer"]["param_groups"]] == [
        pytest.approx(0.004)
    ]

    record = run_and_read(
        compose_in,
        "batch_size=256",
        "lr=0.001",
        "lr_scaling=sqrt",
        "base_batch_size=64",
        "scheduler=onecycle",
        "max_epochs=1",
    )
    import torch

    last = torch.load(
        Path(record["trained"]["best_checkpoint"]).parent / "last.ckpt", weights_only=True
    )
    assert last["lr_schedulers"][0]["base_lrs"][0] == pytest.approx(0.002 / 25)  # max_lr/25


def test_power_scaled_lr_reaches_the_optimizer_and_the_record(compose_in):
    record = run_and_read(
        compose_in,
        "batch_size=256",
        "lr=0.001",
        "lr_scaling=power",
        "lr_scaling_exponent=0.25",
        "base_batch_size=16",
        "max_epochs=1",
    )
    expected = 0.001 * 16**0.25  # (256 / 16) ** 0.25 = 2
    assert record["plan"]["lr_effective"] == pytest.approx(expected)
    assert record["plan"]["lr_scaling"] == "power"
    assert record["plan"]["lr_scaling_exponent"] == 0.25
    assert record["hparams"]["lr"] == 0.001
    assert [g["lr"] for g in record["trained"]["optimizer"]["param_groups"]] == [
        pytest.approx(expected)
    ]

"""Every key a user can set takes effect or is refused before any work (issue 11, part 1).

The run derives some keys from the top-level knobs (the data's batch size from the plan, the
Trainer's accumulation, max_epochs, the optimizer's lr): a value given for one of them would
be ignored or trained with while the record says otherwise, so it is refused with the knob
to use. A key added with `+` that nothing takes is refused. Every knob's value is checked
for type and magnitude. These checks need nothing built, so they run in-process on the
composed config (fast); test_faults.py runs a few of them through the CLI.
"""

from __future__ import annotations

import pytest

from trainlab.checks import ConfigError
from trainlab.config_checks import check_config
from trainlab.faults import bad_value, describe

FAST = ("max_epochs=1",)


def checked(compose_in, *overrides: str) -> None:
    cfg = compose_in(*FAST, *overrides)
    check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))


# (overrides, pieces of the message: the key given and the knob to use instead)
DERIVED_KEYS = [
    (["data.batch_size=32"], ["data.batch_size=32", "batch_size=N", "micro_batch_size=N"]),
    (["data=text", "model=gpt", "data.batch_size=8"], ["data.batch_size=8", "batch_size=N"]),
    (["data.seed=3"], ["data.seed=3", "seed=N"]),
    (["data.folds=3"], ["data.folds=3", "cv.folds=K"]),
    (["trainer.max_epochs=3"], ["trainer.max_epochs=3", "max_epochs=N"]),
    (["trainer.precision=bf16-mixed"], ["trainer.precision=bf16-mixed", "precision="]),
    (["trainer.gradient_clip_val=1.0"], ["trainer.gradient_clip_val=1.0", "grad_clip=1.0"]),
    (["trainer.deterministic=true"], ["trainer.deterministic=True", "deterministic=true"]),
    (["trainer.default_root_dir=/tmp/elsewhere"], ["trainer.default_root_dir", "hydra.run.dir"]),
    (["optimizer.lr=0.01"], ["optimizer.lr=0.01", "lr=..."]),
    (["optimizer=sgd", "optimizer.lr=0.1"], ["optimizer.lr=0.1", "lr=..."]),
    (["optimizer.weight_decay=0.1"], ["optimizer.weight_decay=0.1", "weight_decay=..."]),
    (["scheduler=onecycle", "scheduler.factory.max_lr=0.1"], ["max_lr=0.1", "lr=..."]),
    (["scheduler=warmup_cosine", "scheduler.factory.warmup=10"], ["warmup=10", "warmup=..."]),
    (["scheduler=wsd", "scheduler.factory.min_lr_ratio=0.5"], ["min_lr_ratio=0.5"]),
    (["model.weight_decay_groups=all"], ["model.weight_decay_groups=all"]),
    (
        ["callbacks.checkpoint.dirpath=/tmp/ckpts"],
        ["callbacks.checkpoint.dirpath", "hydra.run.dir"],
    ),
    (
        ["callbacks.checkpoint_last.every_n_train_steps=5"],
        ["every_n_train_steps=5", "checkpoint_every_n_steps=N"],
    ),
    (["callbacks.checkpoint_last.every_s=5"], ["every_s=5", "checkpoint_every_s=S"]),
    (["model.net.parametrization=mup"], ["model.net.parametrization=mup", "parametrization="]),
    (["model.net.base_width=64"], ["model.net.base_width=64", "base_width=N"]),
    (
        ["model=gpt", "data=text", "model.net.base_width=64"],
        ["model.net.base_width=64", "base_width=N"],
    ),
    (["~trainer.max_epochs"], ["~trainer.max_epochs (removed)", "max_epochs=N"]),
    (["~optimizer.lr"], ["~optimizer.lr (removed)", "lr=..."]),
    (
        ["+trainer.accumulate_grad_batches=4"],
        ["trainer.accumulate_grad_batches=4", "batch_size and micro_batch_size"],
    ),
    (["+trainer.callbacks=[]"], ["trainer.callbacks", "callbacks=<option>"]),
    (["+trainer.logger=false"], ["trainer.logger", "logger=<option>"]),
    (["+trainer.enable_checkpointing=false"], ["trainer.enable_checkpointing", "callbacks=none"]),
    (["+model.optimizer.lr=0.01"], ["model.optimizer", "optimizer=<name>"]),
    (["+model.scheduler.gamma=0.5"], ["model.scheduler", "scheduler=<name>"]),
]


@pytest.mark.parametrize(
    ("overrides", "pieces"), DERIVED_KEYS, ids=[" ".join(c[0]) for c in DERIVED_KEYS]
)
def test_a_key_the_run_derives_is_refused_with_the_knob_to_use(compose_in, overrides, pieces):
    with pytest.raises(ConfigError) as refused:
        checked(compose_in, *overrides)
    for piece in pieces:
        assert piece in str(refused.value), str(refused.value)


ADDED_NOT_READ = [
    (["+foo=1"], "no object built at the top level takes foo"),
    (["+cv.x=1"], "no object built under cv takes x"),
    (["+data.foo=2"], "DigitsDataModule does not take"),
    (["+model.net.width=3"], "trainlab.models.nets.MLP does not take"),
    (["+trainer.not_an_argument=1"], "lightning.pytorch.Trainer does not take"),
    (["+callbacks.checkpoint.every=3"], "ModelCheckpoint does not take"),
    (["+paths.extra=/tmp"], "no object built under paths takes extra"),
    (["++optimizer.momentm=0.9"], "torch.optim.Adam does not take"),
    (["++sead=1"], "no object built at the top level takes sead"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), ADDED_NOT_READ, ids=[" ".join(c[0]) for c in ADDED_NOT_READ]
)
def test_an_added_key_that_nothing_reads_is_refused(compose_in, overrides, message):
    with pytest.raises(ConfigError, match="nothing") as refused:
        checked(compose_in, *overrides)
    assert message in str(refused.value)


ADDED_AND_READ = [
    ["+trainer.fast_dev_run=true"],
    ["+callbacks.lr_monitor.log_momentum=true"],
    ["+task.loss.reduction=sum"],
    ["+callbacks.timer._target_=lightning.pytorch.callbacks.Timer"],
    ["++optimizer.amsgrad=true"],
    ["++seed=1"],  # ++ also sets a key that is there
    ["++cv.folds=0"],
    ["tune=lr", "++tune.lr.num_training=50"],
    ["++trainer.max_steps=5"],
]


@pytest.mark.parametrize("overrides", ADDED_AND_READ, ids=[" ".join(c) for c in ADDED_AND_READ])
def test_an_added_key_that_an_object_takes_is_accepted(compose_in, overrides):
    checked(compose_in, *overrides)


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_every_shipped_option_passes_the_checks(compose_in):
    """No shipped config trips its own checks (each group's options with the defaults)."""
    from conftest import group_options

    for group in ("optimizer", "scheduler", "callbacks", "logger", "tune", "trainer"):
        for option in group_options(group):
            checked(compose_in, f"{group}={option}")
    for group in ("experiment", "debug", "hparams_search", "model"):
        for option in group_options(group):
            checked(compose_in, f"{group}={option}", *(["data=text"] if option == "gpt" else []))


# (knob, bad values): each of type and magnitude; `null` only where null means nothing
NUMBER_KNOBS = ["lr", "weight_decay", "grad_clip", "warmup", "min_lr_ratio", "lr_scaling_exponent"]
WHOLE_KNOBS = [
    "batch_size",
    "max_epochs",
    "seed",
    "micro_batch_size",
    "base_batch_size",
    "threads",
    "checkpoint_every_n_steps",
    "cv.folds",
]
NULLABLE = {"grad_clip", "micro_batch_size", "threads", "lr_scaling_exponent"}
BAD_NUMBERS = ["nan", "inf", "-inf", "1e300", "[1,2]", "{a:1}", "null", "abc", "true"]
BAD_WHOLE = ["nan", "inf", "2.5", "-3", "99999999999", "[1,2]", "null", "abc", "true"]
VALUE_CASES = [
    (knob, value)
    for knobs, values in ((NUMBER_KNOBS, BAD_NUMBERS), (WHOLE_KNOBS, BAD_WHOLE))
    for knob in knobs
    for value in values
    if not (value == "null" and knob in NULLABLE)
]


@pytest.mark.parametrize(("knob", "value"), VALUE_CASES, ids=[f"{k}={v}" for k, v in VALUE_CASES])
def test_a_bad_value_of_any_type_or_magnitude_is_refused_by_name(compose_in, knob, value):
    with pytest.raises(ConfigError) as refused:
        checked(compose_in, f"{knob}={value}")
    message = str(refused.value)
    assert message.startswith(f"{knob}=") or f" {knob}=" in message, message
    assert "\n" not in message


TEXT_AND_CHOICE_CASES = [
    ("compile", "1"),
    ("compile", "[true]"),
    ("test", "maybe"),
    ("train", "null"),
    ("deterministic", "2"),
    ("precision", "[16,32]"),
    ("precision", "null"),
    ("optimized_metric", "[val/acc]"),
    ("optimized_metric", "null"),
    ("optimized_direction", "up"),
    ("lr_scaling", "cubic"),
    ("lr_scaling", "power"),  # without lr_scaling_exponent
    ("lr_scaling_exponent", "0.5"),  # with lr_scaling=none
    ("weight_decay_groups", "[a]"),
    ("ckpt_path", "[a,b]"),
    ("resume", "{a:1}"),
    ("task_name", "[x]"),
    ("data.val_fraction", "1.5"),
    ("data.test_fraction", "nan"),
]


@pytest.mark.parametrize(
    ("knob", "value"), TEXT_AND_CHOICE_CASES, ids=[f"{k}={v}" for k, v in TEXT_AND_CHOICE_CASES]
)
def test_a_bad_text_or_choice_is_refused_by_name(compose_in, knob, value):
    from hydra.utils import instantiate

    with pytest.raises(Exception) as refused:
        checked(compose_in, f"{knob}={value}")
        instantiate(compose_in(*FAST, f"{knob}={value}").data)  # it checks its own arguments
    assert bad_value(refused.value) is not None, refused.value  # exit code 2, no traceback
    assert describe(refused.value).startswith(f"{knob}="), describe(refused.value)


def test_the_checks_load_neither_torch_nor_lightning():
    """train.py refuses a bad value before the heavy imports: the checks must not pull them."""
    import subprocess
    import sys

    code = (
        "import sys, trainlab.config_checks, trainlab.faults, trainlab.record; "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# knobs that would be silently overridden by another setting, or not used at all
OVERRIDDEN = [
    (["tune=lr", "cv.folds=3"], "tune= with cv.folds=3 would tune each fold"),
    (["tune=batch_size", "cv.folds=2"], "tune= with cv.folds=2"),
    (["train=false", "ckpt_path=x.ckpt", "lr=0.5"], "lr=0.5 would change nothing"),
    (["train=false", "ckpt_path=x.ckpt", "optimizer=sgd"], "optimizer=sgd would change nothing"),
    (["train=false", "ckpt_path=x.ckpt", "tune=lr"], "tune=lr would change nothing"),
    (["train=false", "ckpt_path=x.ckpt", "max_epochs=3"], "max_epochs=3 would change nothing"),
    (["+trainer.min_epochs=3", "max_epochs=2"], "trainer.min_epochs=3 is more than max_epochs=2"),
    (["+trainer.min_steps=60", "trainer.max_steps=10"], "trainer.min_steps=60 is more than"),
    (["+trainer.limit_test_batches=0"], "test=true with trainer.limit_test_batches=0"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 turns validation off"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), OVERRIDDEN, ids=[" ".join(c[0]) for c in OVERRIDDEN]
)
def test_a_knob_another_setting_would_override_is_refused(compose_in, overrides, message):
    cfg = compose_in(*overrides)  # not FAST: max_epochs is part of some cases
    with pytest.raises(ConfigError) as refused:
        check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))
    assert message in str(refused.value)


def test_evaluation_with_only_evaluation_knobs_is_accepted(compose_in):
    cfg = compose_in("train=false", "ckpt_path=x.ckpt", "batch_size=128", "test=true")
    check_config(cfg, list(cfg.hydra.overrides.task), list(cfg.hydra.runtime.choices))

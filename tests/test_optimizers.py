"""The optimizers of 2026 in the `optimizer` group (issue 16): Muon with AdamW for the rest,
schedule-free AdamW, LAMB/LARS/Lion/SOAP/ADOPT from pytorch-optimizer, and EMA weights; each
builds the right groups, trains with the template's schedules and weight-decay groups, and the
combinations that cannot work are refused before anything is built."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from quick import QUICK
from trainlab.checks import ConfigError
from trainlab.config_checks import check_config
from trainlab.models.gpt import GPT
from trainlab.models.nets import CNN, MLP
from trainlab.optim import build_optimizer, describe_optimizer
from trainlab.optim.muon import MuonWithAdamW
from trainlab.optim.roles import parameter_roles
from trainlab.run import train

NEW = ["muon", "adamw_schedulefree", "lamb", "lars", "lion", "soap", "adopt"]


class Holder(nn.Module):
    """A module with a `net`, as the TaskModule holds its network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net


def record_of(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


# --- which tensors are hidden matrices ------------------------------------------------------


def test_roles_of_the_shipped_networks():
    assert parameter_roles(MLP(in_features=64, hidden_sizes=(32, 16, 8))) == {
        "layers.1.weight": "input",
        "layers.3.weight": "hidden",
        "layers.5.weight": "hidden",
        "layers.7.weight": "output",
        **{f"layers.{i}.bias": "vector" for i in (1, 3, 5, 7)},
    }
    cnn = parameter_roles(CNN())
    assert cnn["features.0.weight"] == "input" and cnn["head.4.weight"] == "output"
    assert cnn["features.3.weight"] == "hidden" and cnn["head.1.weight"] == "hidden"
    assert cnn["features.1.weight"] == "vector"  # BatchNorm's gain
    gpt = parameter_roles(GPT(n_layer=2, n_head=2, n_embd=16, block_size=8))
    hidden = sorted(n for n, r in gpt.items() if r == "hidden")
    assert hidden == sorted(
        f"blocks.{b}.{m}.weight"
        for b in (0, 1)
        for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
    )
    assert gpt["wte.weight"] == "output"  # tied to lm_head: written out as well as read in
    assert gpt["wpe.weight"] == "input"


def test_a_network_can_declare_its_roles_and_a_wrong_declaration_is_refused():
    class Declared(MLP):
        def parameter_roles(self):
            return {n: "hidden" if p.ndim == 2 else "vector" for n, p in self.named_parameters()}

    assert set(parameter_roles(Declared()).values()) == {"hidden", "vector"}

    class Wrong(MLP):
        def parameter_roles(self):
            return {"layers.1.weight": "middle"}

    with pytest.raises(ValueError, match="middle.*missing"):
        parameter_roles(Wrong())

    class PartlyFrozen(Declared):
        def __init__(self):
            super().__init__()
            self.layers[1].weight.requires_grad_(False)  # declared all the same: fine

    assert "layers.1.weight" not in parameter_roles(PartlyFrozen())


def test_attentions_input_projection_is_hidden():
    class Attending(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 8)
            self.attention = nn.MultiheadAttention(8, 2)
            self.head = nn.Linear(8, 2)

    roles = parameter_roles(Attending())
    assert roles["attention.in_proj_weight"] == roles["attention.out_proj.weight"] == "hidden"
    assert (roles["embed.weight"], roles["head.weight"]) == ("input", "output")


# --- Muon: its matrices, AdamW's rest, one optimizer ---------------------------------------


def muon(**kwargs):
    return functools.partial(MuonWithAdamW, **{"lr": 0.02, "weight_decay": 0.1, **kwargs})


@pytest.mark.parametrize(
    "net",
    [MLP(), CNN(), GPT(n_layer=2, n_head=2, n_embd=16, block_size=8)],
    ids=["mlp", "cnn", "gpt"],
)
def test_muon_gets_only_the_2d_hidden_matrices(net):
    module = Holder(net)
    optimizer = build_optimizer(module, muon(), "auto")
    roles = parameter_roles(net)
    names = {id(p): n for n, p in net.named_parameters()}
    by_group = {g["name"]: [names[id(p)] for p in g["params"]] for g in optimizer.param_groups}
    assert set(by_group) == {"muon", "adamw", "adamw_no_decay"}
    assert by_group["muon"] == [
        n for n, p in net.named_parameters() if roles[n] == "hidden" and p.ndim == 2
    ]
    conv_kernels = [n for n, p in net.named_parameters() if p.ndim == 4 and roles[n] == "hidden"]
    assert set(conv_kernels) <= set(by_group["adamw"])  # torch's Muon takes matrices only
    every = sorted(n for group in by_group.values() for n in group)
    assert every == sorted(names.values())  # each parameter exactly once
    assert optimizer.param_groups[2]["weight_decay"] == 0.0
    assert optimizer.muon.param_groups[0] is optimizer.param_groups[0]  # one set of dicts


def test_muon_with_adamw_steps_exactly_as_torchs_muon_and_adamw_side_by_side():
    torch.manual_seed(0)
    module = Holder(MLP(in_features=8, hidden_sizes=(16, 16), num_outputs=3))
    twin = copy.deepcopy(module)
    combined = build_optimizer(module, muon(adamw_lr_ratio=0.5), "all")
    hidden = [twin.net.layers[3].weight]
    rest = [p for p in twin.parameters() if p is not hidden[0]]
    kwargs = {"weight_decay": 0.1}
    alone = [
        torch.optim.Muon(hidden, lr=0.02, adjust_lr_fn="match_rms_adamw", **kwargs),
        torch.optim.AdamW(rest, lr=0.01, betas=(0.9, 0.95), **kwargs),
    ]
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(4):
        for model, optimizers in ((module, [combined]), (twin, alone)):
            for o in optimizers:
                o.zero_grad()
            nn.functional.cross_entropy(model.net(x), y).backward()
            for o in optimizers:
                o.step()
    for a, b in zip(module.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_muon_state_round_trips_and_training_continues_bit_for_bit():
    torch.manual_seed(1)
    module = Holder(MLP(in_features=8, hidden_sizes=(16, 16), num_outputs=3))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))

    def steps(model, optimizer, n):
        for _ in range(n):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model.net(x), y).backward()
            optimizer.step()

    optimizer = build_optimizer(module, muon(), "auto")
    steps(module, optimizer, 3)
    saved_model, saved_state = (
        copy.deepcopy(module.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
    )
    steps(module, optimizer, 3)

    resumed = Holder(MLP(in_features=8, hidden_sizes=(16, 16), num_outputs=3))
    resumed.load_state_dict(saved_model)
    again = build_optimizer(resumed, muon(), "auto")
    again.load_state_dict(saved_state)
    assert again.muon.state is again.state and again.muon.param_groups[0] is again.param_groups[0]
    steps(resumed, again, 3)
    for a, b in zip(module.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_scheduler_moves_both_parts_of_muon():
    module = Holder(MLP())
    optimizer = build_optimizer(module, muon(lr=0.1), "auto")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(0.05)
    assert optimizer.adamw.param_groups[0]["lr"] == pytest.approx(0.05)
    assert scheduler.get_last_lr() == [pytest.approx(0.05)] * 3


def test_muon_on_a_network_without_hidden_matrices_is_refused(compose_in):
    cfg = compose_in(*QUICK, "optimizer=muon", "model.net.hidden_sizes=[32]", "logger=none")
    with pytest.raises(ConfigError, match=r"optimizer=muon needs hidden weight matrices.*input"):
        train(cfg)


# --- every new optimizer trains with the template's schedules and decay groups ---------------


@pytest.mark.parametrize("name", NEW)
def test_each_new_optimizer_trains_with_a_warmup_schedule_and_decay_groups(compose_in, name):
    schedule = "scheduler=none" if name == "adamw_schedulefree" else "scheduler=warmup_cosine"
    cfg = compose_in(
        *QUICK,
        f"optimizer={name}",
        schedule,
        "lr=0.003",
        "weight_decay=0.01",
        "weight_decay_groups=split",
        "logger=none",
        "callbacks=none",
    )
    train(cfg)
    record = record_of(cfg)
    assert record["status"] == "completed"
    built = record["trained"]["optimizer"]
    names = [g.get("name") for g in built["param_groups"]]
    if name == "muon":
        assert names == ["muon", "adamw", "adamw_no_decay"]
    else:
        assert names == ["decay", "no_decay"]
    assert built["param_groups"][-1]["weight_decay"] == 0.0
    assert built["param_groups"][0]["weight_decay"] == 0.01
    assert record["trained"]["scheduler"] == (None if name == "adamw_schedulefree" else "LambdaLR")


@pytest.mark.parametrize(
    ("name", "split"),
    [("lion", True), ("lamb", True), ("soap", True), ("lars", False), ("adopt", False)],
)
def test_auto_decay_groups_follow_whether_the_decay_is_decoupled(name, split):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(Path(__file__).parents[1] / "conf" / "optimizer" / f"{name}.yaml")
    node.lr, node.weight_decay = 0.01, 0.1
    optimizer = build_optimizer(Holder(MLP()), instantiate(node, _convert_="all"), "auto")
    assert len(optimizer.param_groups) == (2 if split else 1)


def test_schedule_free_takes_its_warmup_from_the_warmup_knob(compose_in):
    cfg = compose_in(*QUICK, "optimizer=adamw_schedulefree", "warmup=2", "logger=none")
    train(cfg)
    record = record_of(cfg)
    assert record["trained"]["evaluated_weights"]["averaged"] == "schedule_free"
    saved = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    groups = saved["optimizer_states"][0]["param_groups"]
    assert [g["warmup_steps"] for g in groups] == [2, 2]
    assert not any(g["train_mode"] for g in groups)  # saved in eval mode: the weights are x


# --- schedule-free: eval mode for evaluation and saving, train mode for training -------------


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        data = torch.utils.data.TensorDataset(torch.randn(48, 4), torch.randint(0, 2, (48,)))
        self.train_data = torch.utils.data.DataLoader(data, batch_size=8)
        self.val_data = torch.utils.data.DataLoader(data, batch_size=24)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        return self.training_step(batch, batch_idx)

    def configure_optimizers(self):
        from trainlab.optim.schedule_free import adamw_schedulefree

        return adamw_schedulefree(self.parameters(), lr=0.05, warmup=0, total_steps=12)

    def train_dataloader(self):
        return self.train_data

    def val_dataloader(self):
        return self.val_data


class ModeProbe(L.Callback):
    """Records the optimizer's mode where it matters, and checks a checkpoint taken in the
    middle of an epoch (after step 3) holds the eval-mode weights."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, set[bool]] = {"train": set(), "val": set()}

    def mode(self, trainer) -> bool:
        return all(g["train_mode"] for g in trainer.optimizers[0].param_groups)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen["train"].add(self.mode(trainer))
        if trainer.global_step == 3:
            trained = {k: v.clone() for k, v in pl_module.state_dict().items()}
            trainer.save_checkpoint(self.path)
            assert self.mode(trainer)  # back in train mode after the save
            optimizer = trainer.optimizers[0]
            optimizer.eval()
            self.evaluated = {k: v.clone() for k, v in pl_module.state_dict().items()}
            optimizer.train()
            self.trained = trained

    def on_validation_batch_start(self, trainer, *args):
        if trainer.optimizers:
            self.seen["val"].add(self.mode(trainer))


def test_schedule_free_modes_switch_around_validation_checkpoints_and_the_end(tmp_path):
    from trainlab.callbacks.schedule_free import ScheduleFreeModes

    probe = ModeProbe(tmp_path / "mid.ckpt")
    module = Tiny()
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[ScheduleFreeModes(), probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    assert probe.seen == {"train": {True}, "val": {False}}
    assert not any(g["train_mode"] for g in trainer.optimizers[0].param_groups)  # the end
    saved = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    for name, value in saved["state_dict"].items():
        assert torch.allclose(value, probe.evaluated[name], atol=1e-6)  # x, not y
        if name.endswith("weight"):
            assert not torch.allclose(value, probe.trained[name], atol=1e-4)
    assert not any(g["train_mode"] for g in saved["optimizer_states"][0]["param_groups"])


# --- EMA: the averaged weights are validated, tested and saved --------------------------------


def test_ema_weights_are_what_is_saved_tested_and_recorded(compose_in):
    cfg = compose_in(*QUICK, "callbacks=ema", "callbacks.ema.decay=0.5", "logger=none")
    train(cfg)
    record = record_of(cfg)
    steps = record["trained"]["optimizer_steps"]
    assert record["trained"]["evaluated_weights"] == {
        "averaged": "ema",
        "decay": 0.5,
        "warmup": True,
        "updates": steps,
        "decay_reached": 7 / 16,  # (1 + 6) / (10 + 6): the warmup still below 0.5
    }
    best = torch.load(record["trained"]["best_checkpoint"], weights_only=True)
    assert "current_model_state" in best and "averaging_state" in best
    averaged = best["state_dict"]["net.layers.1.weight"]
    assert not torch.equal(averaged, best["current_model_state"]["net.layers.1.weight"])

    # the test metric of the run is the averaged weights' own: evaluating them alone agrees
    again = compose_in(
        f"ckpt_path={record['trained']['best_checkpoint']}",
        "train=false",
        "callbacks=none",
        "logger=none",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    )
    train(again)
    assert record_of(again)["metrics"]["test/loss"] == record["metrics"]["test/loss"]


def test_ema_warms_its_decay_up():
    from trainlab.callbacks.ema import ema_update

    update = ema_update(0.999, warmup=True)
    average, current = torch.zeros(3), torch.ones(3)
    first = update(average, current, torch.tensor(1))  # decay (1+1)/(10+1)
    assert torch.allclose(first, torch.full((3,), 1 - 2 / 11))
    late = update(average, current, torch.tensor(10**6))  # the decay itself
    assert torch.allclose(late, torch.full((3,), 0.001))
    plain = ema_update(0.9, warmup=False)(average, current, torch.tensor(1))
    assert torch.allclose(plain, torch.full((3,), 0.1))


def test_before_its_first_update_ema_keeps_the_trained_weights(compose_in):
    cfg = compose_in(
        *QUICK, "callbacks=ema", "callbacks.ema.update_starting_at_step=1000", "logger=none"
    )
    train(cfg)
    record = record_of(cfg)
    assert record["trained"]["evaluated_weights"]["updates"] == 0
    best = torch.load(record["trained"]["best_checkpoint"], weights_only=True)
    for name, value in best["current_model_state"].items():
        assert torch.equal(value, best["state_dict"][name]), name  # never the initial weights


def test_ema_run_starting_from_an_ema_checkpoint_of_another_objective(compose_in):
    first = compose_in(*QUICK, "callbacks=ema", "logger=none")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    second = compose_in(
        *QUICK,
        "max_epochs=3",
        "callbacks=ema",
        f"ckpt_path={last}",
        "optimized_metric=val/loss_best",
        "logger=none",
    )
    train(second)
    assert record_of(second)["status"] == "completed"


# --- combinations refused before anything is built -----------------------------------------

REFUSED = [
    (
        ["optimizer=adamw_schedulefree", "scheduler=cosine"],
        "is schedule-free, but scheduler=cosine",
    ),
    (["optimizer=adamw_schedulefree", "scheduler=warmup_cosine"], "schedule-free"),
    (["optimizer=muon", "trainer=fsdp"], "optimizer=muon needs each parameter whole"),
    (["optimizer=lamb", "trainer=fsdp"], "optimizer=lamb needs each parameter whole"),
    (["optimizer=lars", "trainer=fsdp"], "needs each parameter whole"),
    (["optimizer=soap", "trainer=fsdp"], "needs each parameter whole"),
    (["optimizer=adafactor", "trainer=fsdp"], "needs each parameter whole"),
    (["callbacks=ema", "trainer=fsdp"], "callbacks.ema averages the weights.*FSDP"),
    (["callbacks=ema", "optimizer=adamw_schedulefree"], "already evaluates an average"),
    (
        ["+callbacks.swa._target_=lightning.pytorch.callbacks.EMAWeightAveraging", "trainer=fsdp"],
        "callbacks.swa averages",
    ),
    (["optimizer=muon", "+trainer.strategy=deepspeed_stage_2"], "needs each parameter whole"),
    (
        ["callbacks=ema", "+callbacks.checkpoint.save_weights_only=true"],
        "callbacks.checkpoint saves weights only, and callbacks.ema",
    ),
    (
        ["optimizer=adamw_schedulefree", "+callbacks.checkpoint_last.save_weights_only=true"],
        "callbacks.checkpoint_last saves weights only",
    ),
    (
        ["optimizer=muon", "optimizer.adamw_lr_ratio=0.1", "scheduler=onecycle"],
        "adamw_lr_ratio=0.1 trains its AdamW part.*onecycle",
    ),
    (
        ["optimizer=muon", "optimizer.adamw_lr_ratio=0.1", "tune=lr"],
        "adamw_lr_ratio=0.1.*tune=lr",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_combinations_that_cannot_work_are_refused_by_the_checks(compose_in, overrides, message):
    from trainlab.record import group_choices

    cfg = compose_in(*overrides)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    assert group_choices()  # the message names the option chosen, from Hydra's choices


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=lion", "trainer=fsdp"],
        ["optimizer=adopt", "trainer=fsdp"],
        ["optimizer=muon", "trainer=ddp_cpu"],
        ["callbacks=ema", "optimizer=muon"],
        ["optimizer=adamw_schedulefree", "scheduler=none"],
        ["optimizer=muon", "optimizer.adamw_lr_ratio=0.1", "scheduler=warmup_cosine"],
        ["optimizer=muon", "scheduler=onecycle"],
    ],
    ids=lambda o: " ".join(o),
)
def test_combinations_that_work_pass_the_checks(compose_in, overrides):
    check_config(compose_in(*overrides))


def test_describe_names_the_groups():
    optimizer = build_optimizer(Holder(MLP()), functools.partial(torch.optim.AdamW, lr=0.1), "auto")
    assert [g["name"] for g in describe_optimizer(optimizer)["param_groups"]] == [
        "decay",
        "no_decay",
    ]
    plain = build_optimizer(Holder(MLP()), functools.partial(torch.optim.Adam, lr=0.1), "auto")
    assert "name" not in describe_optimizer(plain)["param_groups"][0]

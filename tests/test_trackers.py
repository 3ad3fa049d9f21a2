"""Runs found through the trackers' own clients: MLflow's search_runs, TensorBoard's event
files and HParams plugin data, and W&B's offline run files."""

from __future__ import annotations

import json
import random
import signal
import struct
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from quick import QUICK
from trainlab import trackers

SWEEP_ARGS = [
    "-m",
    "optimizer=sgd",
    "lr=0.05,1e6",  # the second diverges: its status must say so
    *QUICK,
    "max_epochs=1",
    "callbacks=checkpoint",
]


@pytest.fixture(autouse=True)
def mlflow_uri_restored():
    """MLflow's client (and Lightning's logger) set MLFLOW_TRACKING_URI in this process for
    its subprocesses: the tests that follow must not inherit a deleted tmp store."""
    import os

    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


def _wandb_available() -> bool:
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """One two-job sweep logged to every tracker (W&B offline when installed); returns the
    project root, whose outputs/ holds the MLflow store and the sweep dir."""
    project = tmp_path_factory.mktemp("project")
    loggers = "logger=[many,wandb]" if _wandb_available() else "logger=many"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_TRACKING_URI": ""}
    result = run_cli(*SWEEP_ARGS, loggers, project=project, cwd=project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return project


def jobs_only(runs):
    """The runs of a sweep's jobs, without the sweep's parent run."""
    if "tags.trainlab.sweep_parent" not in runs:
        return runs
    return runs[runs["tags.trainlab.sweep_parent"] != "true"]


def sweep_dir(project: Path) -> Path:
    (found,) = (project / "outputs").glob("*/multirun/*/*")
    return found


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_mlflow_sweep_is_one_experiment_of_named_tagged_runs(sweep):
    import mlflow

    name = sweep_dir(sweep).relative_to(sweep / "outputs").as_posix()
    mlflow.set_tracking_uri(f"sqlite:///{sweep}/outputs/mlflow.db")
    runs = jobs_only(mlflow.search_runs(experiment_names=[name])).set_index("tags.mlflow.runName")
    assert sorted(runs.index) == ["0-lr=0.05", "1-lr=1000000.0"]
    done, diverged = runs.loc["0-lr=0.05"], runs.loc["1-lr=1000000.0"]
    assert done["params.lr"] == "0.05" and done["params.optimizer"] == "sgd"
    assert done["params.plan/lr_effective"] == "0.05"
    assert 0.0 <= done["metrics.val/acc_best"] <= 1.0
    assert done["tags.status"] == "completed" and done["status"] == "FINISHED"
    assert diverged["tags.status"] == "diverged"
    assert done["tags.task"] == "train" and done["tags.sweep"] == name
    assert (done["tags.job"], diverged["tags.job"]) == ("0", "1")
    assert "lr=0.05" in done["tags.overrides"].split()
    assert done["tags.run_dir"] == str(sweep_dir(sweep) / "0")
    assert "tags.git_commit" not in runs or runs["tags.git_commit"].isna().all()  # no git here
    # artifacts beside the store, not in <cwd>/mlruns
    assert done["artifact_uri"].startswith(str(sweep / "outputs" / "mlartifacts"))
    assert not (sweep / "mlruns").exists()


def test_mlflow_sweep_is_one_parent_run_with_a_child_per_job(sweep):
    import mlflow

    name = sweep_dir(sweep).relative_to(sweep / "outputs").as_posix()
    mlflow.set_tracking_uri(f"sqlite:///{sweep}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=[name])
    parents = runs[runs["tags.trainlab.sweep_parent"] == "true"]
    assert len(parents) == 1
    parent = parents.iloc[0]
    assert parent["tags.mlflow.runName"] == f"sweep {name}" and parent["status"] == "FINISHED"
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert sorted(children["tags.mlflow.runName"]) == ["0-lr=0.05", "1-lr=1000000.0"]
    assert sorted(children["params.lr"]) == ["0.05", "1000000.0"]
    assert children["metrics.val/acc_best"].notna().any()  # the completed child's final value
    assert len(runs) == 3  # the parent and its two children, nothing else


def test_tensorboard_runs_are_named_and_list_their_hparams_and_objective(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    seen = {}
    for run in sorted(sweep_dir(sweep).glob("*/tensorboard/*")):
        events = EventAccumulator(str(run))
        events.Reload()
        content = events.PluginTagToContent("hparams")
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        )
        metrics = [m.name.tag for m in experiment.experiment.metric_infos]
        assert metrics[0] == "val/acc_best" and "val/loss" in metrics
        knobs = start.session_start_info.hparams
        assert {"optimizer", "lr", "batch_size", "scheduler", "plan/lr_effective"} <= set(knobs)
        assert knobs["scheduler"].string_value == "none"  # None is shown, as text
        seen[run.name] = knobs["lr"].number_value
        if run.name.startswith("0-"):  # the objective's values are the run's own scalars
            assert [e.step for e in events.Scalars("val/acc_best")]
    assert seen == {"0-lr=0.05": 0.05, "1-lr=1000000.0": 1e6}  # as Hydra's sweeper writes it


def wandb_records(path: Path) -> list:
    """The records of a W&B offline `.wandb` file: a 7-byte header, then LevelDB-log chunks
    (crc32, length, type: full/first/middle/last) in 32 KiB blocks, each a Record proto."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding at the end of the file
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


@pytest.mark.skipif(not _wandb_available(), reason="wandb is not installed")
def test_wandb_offline_runs_are_named_grouped_tagged_with_the_same_config(sweep):
    group = sweep_dir(sweep).relative_to(sweep / "outputs").as_posix()
    for job, name, status in [("0", "0-lr=0.05", "completed"), ("1", "1-lr=1000000.0", "diverged")]:
        (path,) = (sweep_dir(sweep) / job / "wandb").glob("offline-run-*/run-*.wandb")
        records = wandb_records(path)
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert runs[0].display_name == name and runs[0].run_group == group
        assert "train" in runs[0].tags and "sweep" in runs[0].tags
        assert any(status in r.tags for r in runs)  # the status is added at the end
        config = {
            item.key: json.loads(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "config"
            for item in r.config.update
        }
        assert config["lr"] == float(name.split("=")[1]) and config["optimizer"] == "sgd"
        assert config["tracking/sweep"] == group and config["tracking/job"] == job


def test_names_follow_the_overrides_not_the_seeded_rng(compose_in):
    # names are made of the command line's overrides: exactly these, no baseline added
    cfg = compose_in("lr=0.01", "optimizer=sgd", baseline=False)
    random.seed(0)
    first = trackers.run_name(_root_=cfg)
    random.seed(1)
    assert trackers.run_name(_root_=cfg) == first == "lr=0.01,optimizer=sgd"
    plain = compose_in(baseline=False)
    assert trackers.run_name(_root_=plain) == Path(plain.paths.output_dir).name
    # a fold of cross-validation is its own run
    folded = compose_in("cv.folds=3", "data.fold=1", baseline=False)
    assert trackers.run_name(_root_=folded) == "cv.folds=3,data.fold=1-fold1"
    slashed = compose_in("ckpt_path=/a/b.ckpt")
    assert "/" not in trackers.run_dirname(_root_=slashed)
    long = compose_in(*(f"+x{i}=1234567890" for i in range(20)))
    assert len(trackers.run_name(_root_=long)) <= trackers.NAME_LIMIT


def test_logger_configs_get_names_tags_and_honor_mlflow_tracking_uri(compose_in, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_in("logger=[many,wandb]", "lr=0.02", baseline=False)  # names: these only
    assert cfg.logger.mlflow.run_name == "lr=0.02" == cfg.logger.wandb.name
    assert cfg.logger.tensorboard.version == "lr=0.02"
    assert cfg.logger.mlflow.experiment_name == "train"  # a single run: the task's experiment
    assert cfg.logger.wandb.group is None
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{cfg.paths.log_dir}/mlflow.db"
    assert cfg.logger.mlflow.artifact_location.endswith("/mlartifacts")
    assert cfg.logger.mlflow.tags["overrides"] == "logger=[many,wandb] lr=0.02"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert cfg.logger.mlflow.tracking_uri == "http://tracking.example:5000"
    assert cfg.logger.mlflow.artifact_location is None  # the server's own artifact root
    # as MLflow sets it when it opens the project's store: still the project's artifacts
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cfg.paths.log_dir}/mlflow.db")
    assert cfg.logger.mlflow.artifact_location.endswith("/mlartifacts")


def test_git_commit_when_available(tmp_path):
    commit = trackers.git_commit(str(ROOT))
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    if (ROOT / ".git").exists():
        assert commit is not None
    assert trackers.git_commit(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("status", "mlflow_status"), [("failed", "FAILED"), ("interrupted", "KILLED")]
)
def test_close_tags_mlflow_runs_with_how_they_ended(tmp_path, status, mlflow_status):
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger
    from omegaconf import OmegaConf

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="t", run_name="r", tracking_uri=uri)
    cfg = OmegaConf.create({"optimized_metric": "val/acc"})
    trackers.log_hyperparams([logger], {"lr": 0.1, "scheduler": None}, cfg, module=None)
    trackers.close(status)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    assert runs["status"].tolist() == [mlflow_status]
    assert runs["tags.status"].tolist() == [status]
    assert runs["params.scheduler"].tolist() == ["None"]
    assert trackers._open == []


@pytest.mark.slow  # over 9 s end to end: the default suite stays near 10 minutes
def test_parallel_jobs_share_a_new_mlflow_store_and_the_sweeps_experiment(tmp_path):
    """Two joblib workers opening a store that does not exist yet: MLflow migrates a new
    SQLite file when its client is built, and two migrations at once fail one job."""
    import mlflow

    sweep = tmp_path / "outputs" / "sweep"
    result = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "lr=0.001,0.01",
        *QUICK,
        "max_epochs=1",
        "callbacks=checkpoint",
        "logger=mlflow",
        f"hydra.sweep.dir={sweep}",
        project=tmp_path,
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["sweep"])
    assert (runs["tags.trainlab.sweep_parent"] == "true").sum() == 1  # one parent, not two
    runs = jobs_only(runs)
    assert sorted(runs["tags.mlflow.runName"]) == ["0-lr=0.001", "1-lr=0.01"]
    assert runs["tags.status"].tolist() == ["completed", "completed"]


def test_a_job_that_fails_before_training_has_a_failed_mlflow_run(compose_in):
    import mlflow

    from trainlab.run import train

    # digits' training split is under 5000; the name is these overrides only (no baseline)
    cfg = compose_in(
        "data=digits", "batch_size=5000", "logger=mlflow", "callbacks=none", "lr=0.03",
        baseline=False,
    )  # fmt: skip
    with pytest.raises(Exception, match="larger than the training split"):
        train(cfg)
    mlflow.set_tracking_uri(f"sqlite:///{cfg.paths.log_dir}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["train"])
    name = "data=digits,batch_size=5000,callbacks=none,lr=0.03"
    assert runs["tags.mlflow.runName"].tolist() == [name]
    assert runs["tags.status"].tolist() == ["failed"] and runs["status"].tolist() == ["FAILED"]
    assert trackers._open == []


@pytest.mark.slow  # about 12 s: W&B's offline service starts
def test_a_run_stopped_by_sigterm_ends_its_mlflow_and_wandb_runs_interrupted(tmp_path):
    """SIGTERM in the middle of an epoch (StopOnSignal saves last.ckpt, exit 128 + 15): the
    MLflow run is KILLED with the tag status=interrupted; the W&B offline run gets the
    `interrupted` tag and summary status, and ends with a non-zero exit code."""
    import mlflow

    wandb = _wandb_available()
    run = tmp_path / "outputs" / "run"
    result = run_cli(
        "max_epochs=3",
        "trainer.limit_train_batches=3",
        "logger=[mlflow,wandb]" if wandb else "logger=mlflow",
        f"hydra.run.dir={run}",
        "+callbacks.stop._target_=kill_at_step.SigtermAtBatch",
        "+callbacks.stop.epoch=1",
        "+callbacks.stop.batch=0",
        project=tmp_path,
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(ROOT / "tests"),
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "MLFLOW_TRACKING_URI": "",
        },
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    assert (run / "checkpoints" / "last.ckpt").exists()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["train"])
    assert runs["status"].tolist() == ["KILLED"]
    assert runs["tags.status"].tolist() == ["interrupted"]
    if not wandb:
        return
    (path,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(path)
    kinds = [r.WhichOneof("record_type") for r in records]
    last_run = [r.run for r, kind in zip(records, kinds, strict=True) if kind == "run"][-1]
    assert "interrupted" in last_run.tags and "train" in last_run.tags
    summary = {
        item.key: json.loads(item.value_json)
        for r, kind in zip(records, kinds, strict=True)
        if kind == "summary"
        for item in r.summary.update
        if item.key
    }
    assert summary["status"] == "interrupted"
    (exit_record,) = [r.exit for r, kind in zip(records, kinds, strict=True) if kind == "exit"]
    assert exit_record.exit_code != 0

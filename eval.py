"""Evaluate one checkpoint: `python eval.py ckpt_path=<run dir>/checkpoints/<file>.ckpt`.

It validates and tests the checkpoint (with `predict=test`, also writes the test split's
predictions) in a run directory of its own, outputs/eval/<date>/<time>_<id>/; the run that
saved the checkpoint is only read. The config is conf/eval.yaml: the training config with
train=false, so `python eval.py ckpt_path=X` is `python train.py train=false ckpt_path=X`
(trainlab.run), started the same way (train.main).

A checkpoint inside a run directory (`<run>/checkpoints/x.ckpt`, with `<run>/.hydra/`) is
evaluated with the options that run was started with (its .hydra/overrides.yaml: model, data,
seed, experiment, ...), so that nobody retypes them; an option given on this command line
wins. Left out are what only shaped its training or its directory: the training knobs
(trainlab.config_checks.TRAINING_ONLY), paths, hydra, tune, cv, hparams_search, debug and
the start/stop knobs (ckpt_path, train, test, predict, resume, task_name).
"""

import sys
import zipfile
from pathlib import Path

import hydra

if __name__ == "__main__":
    from trainlab.heap import pause_collections

    pause_collections()  # as train.py (trainlab.heap)

import train  # the project root's train.py: PROJECT_ROOT, the run id, its main and argv

# what an evaluation never takes over from the run that saved the checkpoint: its own
# starting point, its directories and sweeps, and (with TRAINING_ONLY) how it trained
NOT_CARRIED = (
    *("ckpt_path", "train", "test", "predict", "resume", "task_name"),
    *("paths", "hydra", "tune", "cv", "hparams_search", "debug"),
)
# Hydra's flags that need no ckpt_path: they print and exit
INFO_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg) -> float:
    return train.main(cfg)  # a composed config is run as it is: the run lock, the checks, run()


def eval_argv(argv: list[str]) -> list[str]:
    """`argv` with, before the user's own options, those of the run that saved ckpt_path."""
    from trainlab.checks import ConfigError
    from trainlab.ranks import override_key

    args = argv[1:]
    given = [a for a in args if override_key(a) == "ckpt_path"]
    if not given:
        if any(a.split("=", 1)[0] in INFO_FLAGS for a in args):
            return argv
        raise ConfigError(
            "eval.py evaluates a checkpoint, but no ckpt_path was given: python eval.py "
            "ckpt_path=outputs/train/<date>/<time>_<id>/checkpoints/<file>.ckpt (a run's best "
            "one is epoch_*.ckpt, its newest last.ckpt)."
        )
    value = given[-1].split("=", 1)[1].strip().strip("'\"")
    if "," in value or not Path(value).expanduser().is_file():
        raise ConfigError(
            f"ckpt_path={value} is not a checkpoint file (it does not exist, or is a directory or "
            "a list): give the path of one .ckpt a run saved, e.g. "
            "ckpt_path=outputs/train/<date>/<time>_<id>/checkpoints/last.ckpt."
        )
    if not zipfile.is_zipfile(Path(value).expanduser()):  # torch.save writes a zip archive
        raise ConfigError(
            f"ckpt_path={value} is not a readable checkpoint (corrupt, truncated, or not saved by "
            "torch): give a .ckpt a run of this template saved, e.g. "
            "ckpt_path=outputs/train/<date>/<time>_<id>/checkpoints/last.ckpt."
        )
    own = {override_key(a) for a in args}
    carried = [o for o in run_overrides(Path(value)) if override_key(o) not in own]
    carried += same_split(Path(value), args)
    if carried:
        # on stderr: `--cfg job` prints the config on stdout
        print(
            f"eval.py: with the options of the run that saved it: {' '.join(carried)}",
            file=sys.stderr,
        )
    return [argv[0], *carried, *args]


def run_overrides(ckpt: Path) -> list[str]:
    """The overrides `<run>/.hydra/overrides.yaml` lists for `<run>/checkpoints/<ckpt>`, as
    typed, without those an evaluation must not take over; [] outside a run directory."""
    import yaml

    from trainlab.checks import ConfigError
    from trainlab.config_checks import TRAINING_ONLY
    from trainlab.ranks import override_key

    saved = ckpt.expanduser().resolve().parent.parent / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return []
    try:
        listed = yaml.safe_load(saved.read_text()) or []
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(
            f"{saved} (the options of the run that saved ckpt_path={ckpt}) cannot be read: {err}"
        ) from err
    skipped = (*NOT_CARRIED, *TRAINING_ONLY)

    def carried(override: str) -> bool:
        key = override_key(override)
        return not any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in skipped)

    return [str(o) for o in listed if carried(str(o))] if isinstance(listed, list) else []


def same_split(ckpt: Path, args: list[str]) -> list[str]:
    """The seeds that drew the run's data split (its `seed` and `split_seed`, from
    `<run>/.hydra/config.yaml`), so that its test split is evaluated and not a new one that
    holds samples the checkpoint trained on; giving another is refused. [] outside a run."""
    import yaml

    from trainlab.checks import ConfigError
    from trainlab.ranks import override_key

    saved = ckpt.expanduser().resolve().parent.parent / ".hydra" / "config.yaml"
    try:
        config = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    except (OSError, yaml.YAMLError):
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("seed"), int):
        return []
    run_seeds = {"seed": config["seed"]}
    split = config.get("split_seed")
    run_seeds["split_seed"] = split if isinstance(split, int) else config["seed"]
    given = {override_key(a): a.split("=", 1)[1] for a in args if "=" in a}
    for key in ("split_seed", "seed"):
        if key in given and given[key].strip() != str(run_seeds[key]):
            if key == "seed" and "split_seed" in given:
                continue  # a new init seed over the run's own split: allowed
            raise ConfigError(
                f"{key}={given[key]}: the run that saved ckpt_path={ckpt} split its data with "
                f"split_seed={run_seeds['split_seed']} (seed={run_seeds['seed']}); another "
                "seed draws another split, whose val and test samples the checkpoint may have "
                f"trained on. Leave {key} out (eval.py uses the run's), or give "
                f"split_seed={run_seeds['split_seed']} as well to change only the seed."
            )
    return [f"{k}={v}" for k, v in run_seeds.items() if k not in given]


def prepare_argv(argv: list[str]) -> list[str]:
    """The command line Hydra gets: train.py's (a rank started by torchrun or srun), after
    the checkpoint's run's options are put in; a bad ckpt_path is one paragraph."""
    return train.prepare_argv(argv, rewrite=eval_argv)


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    train.run_then_exit_fast(main)

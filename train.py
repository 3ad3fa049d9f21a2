"""Train one model: `python train.py optimizer=adam lr=0.001`. See `python train.py --help`.

The pipeline lives in src/trainlab/run.py; this file only hands the composed config to it.
"""

import os
import sys
import uuid

import hydra

os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))
# the short id in every run and sweep directory name (conf/hydra/default.yaml): an environment
# variable, so that joblib's worker processes resolve the same directory as this process
os.environ["TRAINLAB_RUN_ID"] = uuid.uuid4().hex[:6]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg) -> float:
    from trainlab.run import main as run  # imported here so that --help stays fast

    return run(cfg)


def continue_run_if_asked() -> None:
    """`resume=<run dir>`: replace the command line by the one that run was started with."""
    if not any(arg.startswith("resume=") for arg in sys.argv[1:]):
        return
    from trainlab.checks import ConfigError
    from trainlab.rundir import is_other_rank, resume_argv

    if is_other_rank():  # Lightning starts DDP ranks with rank 0's (rewritten) command line
        return

    try:
        sys.argv = resume_argv(sys.argv)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    continue_run_if_asked()
    main()

"""Train one model: `python train.py optimizer=adam lr=0.001`. See `python train.py --help`.

The pipeline lives in src/trainlab/run.py; this file hands the composed config to it, and
around it does what concerns the run directory rather than the training:

- before Hydra starts, `resume=<run dir>` becomes the command that continues that run
  (trainlab.resume), and a rank != 0 started by torchrun or srun with the same command as
  rank 0 gets the overrides that keep it from writing rank 0's files (trainlab.ranks);
- while the run trains, global rank 0 holds `<run dir>/run.lock` (trainlab.runlock), and a
  resumed run trains with its own saved config (trainlab.resumed).

A run or sweep directory that cannot be written is refused before Hydra writes there, by the
RunDirGuard callback (trainlab.rundir).
"""

import os
import sys
import uuid

import hydra

if __name__ == "__main__":
    from trainlab.heap import pause_collections

    pause_collections()  # until the heavy imports are done: they make lasting objects only

os.environ.setdefault("PROJECT_ROOT", os.path.dirname(os.path.abspath(__file__)))
# the short id in every run and sweep directory name (conf/hydra/default.yaml): an environment
# variable, so that joblib's worker processes resolve the same directory as this process
os.environ["TRAINLAB_RUN_ID"] = uuid.uuid4().hex[:6]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig

    from trainlab.config_checks import check_before_start
    from trainlab.ranks import is_other_rank
    from trainlab.resumed import saved_config
    from trainlab.runlock import holding

    rank_zero = not is_other_rank()
    try:
        with holding(HydraConfig.get().runtime.output_dir, rank_zero):
            if cfg.get("resume") is not None:
                cfg = saved_config(cfg, write=rank_zero)
            check_before_start(cfg)  # a bad value: refused before torch and Lightning load
            from trainlab.heap import freeze_imports
            from trainlab.run import main as run  # imported here so that --help stays fast

            freeze_imports()  # full collections skip what the imports made (trainlab.heap)
            return run(cfg, checked=True)  # its faults: a message, or a failed job
    except Exception as err:  # the lock is held by another process, .hydra/ is unreadable
        return refused(err, cfg)


def refused(err: Exception, cfg) -> float:
    """A run that could not start: in a sweep the job gets the worst objective and the sweep
    goes on; alone, one paragraph (exit code 2 for a bad value or a held run dir, 1 for a
    file-system fault)."""
    import logging

    from trainlab.distributed import in_sweep
    from trainlab.faults import describe, exit_with_message, full_error_asked
    from trainlab.objective import direction_or_default
    from trainlab.record import worst_objective

    if in_sweep():
        logging.getLogger("train").error("job refused, the sweep goes on: %s", describe(err))
        return worst_objective(direction_or_default(cfg))
    if full_error_asked():
        raise err
    exit_with_message(err)
    raise err  # not reached: exit_with_message exits


def prepare_argv(argv: list[str], rewrite=None) -> list[str]:
    """The command line Hydra gets: `rewrite(argv)` (by default, for `resume=<run dir>`, the
    one that continues that run; eval.py passes its own), then for a rank != 0 of torchrun or
    srun the overrides that leave Hydra's files to rank 0. Ranks that Lightning started already
    have rank 0's finished command line. A ConfigError of `rewrite` is one paragraph, exit 2."""
    from trainlab.checks import ConfigError
    from trainlab.ranks import rank_argv, started_by_lightning

    if started_by_lightning(argv):
        return argv
    if rewrite is None and any(arg.startswith("resume=") for arg in argv[1:]):
        from trainlab.resume import resume_argv

        rewrite = resume_argv
    if rewrite is not None:
        try:
            argv = rewrite(argv)
        except ConfigError as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)
    return rank_argv(argv)


def run_then_exit_fast(entry) -> None:
    """`entry()`, then `gc.freeze()` on the way out, however it ends: Python's shutdown
    would otherwise walk every object torch and Lightning created (sympy's caches, dynamo's
    tables, ...), a second of a short run's wall time for nothing. atexit handlers (logging's
    flush, the trackers') still run; frozen objects are just never collected."""
    import gc

    try:
        entry()
    finally:
        gc.freeze()


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    run_then_exit_fast(main)

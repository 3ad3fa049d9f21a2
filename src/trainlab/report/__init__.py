"""The sweep report: one table and a few plots that answer "which lr, batch size, optimizer?".

Written by Hydra when a multirun ends (`SweepReport`, registered in conf/hydra/default.yaml)
and by hand on any sweep directory, finished or not:

    python -m trainlab.report outputs/train/multirun/<date>/<time>_<id>

It writes summary.csv, summary.md (the recommendation first), configs.csv, configs.md,
report.json and PNG plots into the sweep directory. pandas and
matplotlib are imported only when a report is written, so that single runs do not pay for them.

- `jobs`: reading each job's directory (overrides, record) into one row
- `summary`: the table, best first, and `write_report`, which writes every file
- `objectives`: a sweep whose jobs optimize different objectives (data sets, a swept
  optimized_metric): a report per objective in objectives/, never one ranking across them
- `configs`: repeats (seeds) grouped into configurations, mean ± 95% CI, ties with the best
- `recommend`: the configuration to train, its command, the lr-edge suggestion, report.json
- `stats`: the Student-t interval and the t-tests the configurations use
- `progress`: the console lines of a sweep (per job, and the ranking at its end)
- `plots`: the PNG plots; `optuna_view`: those of an Optuna study (history, importances)
- `names`: any metric name in words (val/auroc_best -> best validation AUROC), which way is better
- `pruned`: how far a trial the pruner stopped got (an outcome, ranked after the completed)
- `callback`: the Hydra callback; `cli`: the command
"""

from trainlab.report.callback import SweepReport
from trainlab.report.cli import main
from trainlab.report.jobs import job_dirs, read_job
from trainlab.report.summary import summarize, write_report

__all__ = ["SweepReport", "job_dirs", "main", "read_job", "summarize", "write_report"]

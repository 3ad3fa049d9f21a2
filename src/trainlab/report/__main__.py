"""`python -m trainlab.report <sweep dir>`."""

import sys

from trainlab.report.cli import main

sys.exit(main())

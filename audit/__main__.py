"""`python -m audit RESULTS_DIR [--strict]`: the results checker (same as `python -m audit.check`)."""

import sys

from audit.check import main

sys.exit(main())

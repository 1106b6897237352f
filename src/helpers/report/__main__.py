"""``python -m helpers.report``: render the report without Quarto (see helpers.report.render)."""

import sys

from helpers.report.render import main

sys.exit(main())

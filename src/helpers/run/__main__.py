"""``python -m helpers.run params/grid_<name>.yaml``: run a grid of notebook runs (see ``helpers.run.launch``)."""

import sys

from helpers.run.launch import main

sys.exit(main())

"""``python -m wanpy``: the same command line as the ``wanpy`` console script."""

import sys

from wanpy.cli import main

sys.exit(main())

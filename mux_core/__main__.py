"""``python -m mux_core``: the ``mux`` command, for environments without the console script."""

import sys

from ._cli import main

sys.exit(main())

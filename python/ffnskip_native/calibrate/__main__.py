"""``python -m ffnskip_native.calibrate ARGS``: the same as ``ffnskip calibrate ARGS``."""

import sys

from .cli import main

sys.exit(main())

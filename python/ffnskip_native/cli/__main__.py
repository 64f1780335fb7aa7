"""``python -m ffnskip_native.cli ARGS``: the same as ``ffnskip ARGS``."""

import sys

from . import main

sys.exit(main())

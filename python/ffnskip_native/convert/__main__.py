"""python -m ffnskip_native.convert HF_DIR ... (the same command line as tools/convert.py)."""

import sys

from .cli import main

sys.exit(main())

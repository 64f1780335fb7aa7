#!/usr/bin/env python3
"""Calibrate a model's FFN-skip profile: the same as `ffnskip calibrate` (see --help)."""

import sys

from ffnskip_native.calibrate import main

if __name__ == "__main__":
    sys.exit(main())

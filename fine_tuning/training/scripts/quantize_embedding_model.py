#!/usr/bin/env python
"""Seed path for quantization: the same flags as `embedops quantize` (--model-path --output --dtype ...)."""

import sys

from embedops.cli import main

if __name__ == "__main__":
    sys.exit(main(["quantize", *sys.argv[1:]]))

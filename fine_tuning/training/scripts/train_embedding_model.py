#!/usr/bin/env python
"""Seed path for fine-tuning: the same flags as `embedops finetune`."""

import sys

from embedops.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))

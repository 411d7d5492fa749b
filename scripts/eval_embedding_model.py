"""Seed path for evaluation: forwards every argument to `embedops eval`."""

import sys

from embedops.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))

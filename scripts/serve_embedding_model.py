"""Seed path: `python scripts/serve_embedding_model.py --model DIR --port 8000 --normalize`."""

import sys

from embedops.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))

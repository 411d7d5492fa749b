import sys

from embedops.cli import main

sys.exit(main())

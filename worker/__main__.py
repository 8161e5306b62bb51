"""`python -m worker`: the `update-executor` command (worker/command.py)."""

import sys

from .command import main

sys.exit(main())

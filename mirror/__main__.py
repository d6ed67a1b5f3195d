"""`python -m mirror` is the `mirror` command."""

import sys

from mirror.cli import main

sys.exit(main())

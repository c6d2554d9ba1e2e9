"""``python -m hybriddsl``: the same as the ``hybdsl`` command."""

import sys

from hybriddsl.cli import main

sys.exit(main())

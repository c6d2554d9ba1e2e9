import sys

from hybriddsl.cli import main

sys.exit(main())

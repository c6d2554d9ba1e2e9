"""One module per layer kind: the ``nn.Module`` classes, imported when a layer is built.

Importing this package registers every kind in :mod:`hybriddsl.registry` from :mod:`hybriddsl.specs`, which
does not import torch; ``hybriddsl.layers.<kind>`` does.
"""

from __future__ import annotations

import hybriddsl.specs  # noqa: F401  (registers every kind)
from hybriddsl.specs import KINDS  # noqa: F401

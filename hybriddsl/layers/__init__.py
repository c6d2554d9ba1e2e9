"""One module per layer kind: the ``nn.Module`` classes, imported when a layer is built.

Their specs (options, checks) are in :mod:`hybriddsl.specs`, which does not import torch; the registry
(:mod:`hybriddsl.registry`) lists them and builds these modules. ``hybriddsl.layers.<kind>`` imports torch.
"""

from __future__ import annotations

from hybriddsl.specs import KINDS  # noqa: F401

"""Conversions between .hyb and the layer-pattern conventions of other tools.

- Megatron-LM hybrid patterns (``M-M*-``): :func:`from_megatron`, :func:`to_megatron`
- Hugging Face configs of hybrid families (Jamba, Zamba2, Nemotron-H, Qwen3-Next, RecurrentGemma, Falcon-H1):
  :func:`from_hf`, :func:`to_hf`

Every function raises :class:`ConvertError` (a HybError) when the target cannot express the model.
"""

from hybriddsl.interop.common import ConvertError
from hybriddsl.interop.hf import FAMILIES, detect, from_hf, to_hf
from hybriddsl.interop.megatron import from_megatron, to_megatron

__all__ = ["FAMILIES", "ConvertError", "detect", "from_hf", "from_megatron", "to_hf", "to_megatron"]

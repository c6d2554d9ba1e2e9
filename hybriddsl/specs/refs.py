"""A layer kind's module class named by module and attribute, imported on first use.

Specs refer to their ``nn.Module`` classes through :func:`module_ref` so that reading the registry (parsing,
``hybdsl check``, ``hybdsl layers``) never imports torch; building a layer imports it.
"""

from __future__ import annotations

import importlib
from typing import Any


class ModuleRef:
    """Callable stand-in for ``module:name``; ``__module__``/``__qualname__`` name the target (codegen uses them)."""

    def __init__(self, module: str, name: str):
        self.__module__ = module
        self.__qualname__ = name
        self.__name__ = name
        self._target: Any = None

    def resolve(self) -> Any:
        """The class itself (imports its module the first time)."""
        if self._target is None:
            obj: Any = importlib.import_module(self.__module__)
            for part in self.__qualname__.split("."):
                obj = getattr(obj, part)
            self._target = obj
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<module_ref {self.__module__}:{self.__qualname__}>"


def module_ref(module: str, name: str) -> ModuleRef:
    """``module_ref("hybriddsl.layers.mamba", "Mamba")``: the class, imported when first called."""
    return ModuleRef(module, name)

"""The one way a package exports names that load on first use (so that `import sts.codec` or
`import train` stays cheap: torch and transformers load when a function that needs them runs).

    __all__, __getattr__ = lazy_exports(__name__, {"TrainConfig": "train.config", "train": "train.trainer"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], object]]:
    """(`__all__`, `__getattr__`) for `package`, whose names `exports` maps to the module defining each."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return sorted(exports), __getattr__

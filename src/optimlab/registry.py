"""One registry shape for everything chosen by name: tasks, optimizers, schedules, hypergradient controllers,
sweep backends.

    SCHEDULES = Registry("schedule")
    SCHEDULES.register("cosine", build_cosine, description="half a cosine from lr to min_lr")

    @SCHEDULES.register("linear", description="...")      # or as a decorator
    def build_linear(...): ...

    SCHEDULES.get("cosin")   # ConfigError: unknown schedule 'cosin'; did you mean cosine?

Torch-free, so that the configuration and the sweep driver can list choices without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from optimlab.errors import unknown_name

T = TypeVar("T")
D = TypeVar("D")  # what a decorator registers, returned unchanged

_MISSING = object()


class Registry(Generic[T]):
    """Name -> object with a one-line description; `kind` names the registry in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._objects: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    @overload
    def register(self, name: str, obj: T, description: str = "") -> T: ...

    @overload
    def register(self, name: str, *, description: str = "") -> Callable[[D], D]: ...

    def register(self, name: str, obj: Any = _MISSING, description: str = "") -> Any:
        """Register `obj` under `name`; without `obj`, a decorator that registers what it decorates.

        Registering the very same object again is a no-op (modules may be imported twice under different
        names, e.g. plugins); another object under a taken name is a ValueError.
        """
        if obj is _MISSING:

            def decorator(target: Any) -> Any:
                return self.register(name, target, description)

            return decorator
        if name in self._objects and self._objects[name] is not obj:
            raise ValueError(f"{self.kind} name {name!r} is already registered")
        self._objects[name] = obj
        self._descriptions[name] = description or _first_doc_line(obj)
        return obj

    def get(self, name: str) -> T:
        """The object registered as `name`; an unknown name is a ConfigError suggesting close matches."""
        try:
            return self._objects[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._objects) from None

    def names(self) -> list[str]:
        return sorted(self._objects)

    def describe(self, name: str) -> str:
        """The one-line description given at registration (else the object's docstring's first line)."""
        self.get(name)  # the same error for an unknown name
        return self._descriptions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _first_doc_line(obj: object) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class RegistryNames:
    """The names of the registry `attribute` of `module`, read when first asked (`in`, iteration).

    Lets a torch-free module (the configuration's choice lists) name a registry that lives in a module
    importing torch, without importing it until a value is actually checked.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self._module = module
        self._attribute = attribute

    def _registry(self) -> Registry:
        import importlib

        return getattr(importlib.import_module(self._module), self._attribute)

    def __contains__(self, name: object) -> bool:
        return name in self._registry()

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry().names())

    def __repr__(self) -> str:
        return f"RegistryNames({self._module}.{self._attribute})"

"""The one extension-point idiom: a named, ordered ``Registry`` of things users may add to.

Used for checkpoint layouts (:data:`infomin_det.convert.layouts.LAYOUTS`), report formats
(:data:`infomin_det.report.render.RENDERERS`), CLI subcommands (:data:`infomin_det.cli.SUBCOMMANDS`)
and view families (:data:`pretrain.views.families.VIEW_FAMILIES`)::

    FORMATS = Registry("report format")
    FORMATS.register("markdown", to_markdown)          # or, on a function / class:

    @FORMATS.register("html")
    def to_html(tables): ...

    FORMATS.get("html")        # UserError naming the choices for an unknown name
    list(FORMATS)              # names, in registration order (order is meaningful where a
                               # registry is searched: the first matching checkpoint layout wins)

A name is registered once (a second registration is a programming error: ``ValueError``). How to
add to each registry: ``docs/extending.md``. Like fvcore's ``Registry``, but with explicit names
(layouts are instances, subcommands are module strings) and the project's ``UserError`` contract.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar, overload

from infomin_det.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name, obj=None):
        """Add ``obj`` under ``name``; without ``obj``, a decorator that adds what it decorates."""
        if obj is None:
            return lambda o: self.register(name, o)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(f"unknown {self.what} {name!r}", f"one of: {', '.join(self._items)}") from None

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._items)})"

"""Value classes for the runtime's start path, without the `dataclasses` module.

`mctl-runtime run` is measured as a whole process against `runc run`, and
importing `dataclasses` (which pulls in `inspect`, `ast`, `dis`, `tokenize`)
plus generating each class's methods was a fifth of it (bench/README.md,
"Import costs on the start path"). A subclass
declares its fields in `__slots__` and writes its own `__init__`; `Record`
gives what `@dataclass(frozen=True)` gave the rest of the code: equality,
hashing and repr by field, and `replace()` in place of `dataclasses.replace`.
Fields are set once, in `__init__`; change a record with `replace`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self


class Record:
    # A subclass's field names (a tuple of str, as Python allows a str alone).
    __slots__: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        # Each field is set once, by __init__; after that the record is frozen.
        try:
            getattr(self, name)
        except AttributeError:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"{type(self).__name__}.{name} cannot change: use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} cannot be deleted")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied; unknown names are a TypeError, as with dataclasses."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)

"""Immutable value records without :mod:`dataclasses` or ``NamedTuple``.

The CLI builds a few small records on every command (the repository's paths,
the pid file, the caller's identity); generating dataclass methods or creating
``NamedTuple`` classes costs each command start-up time, so they share this
hand-written base instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Record"]


class Record:
    """An immutable record: fields set once in ``__init__``; equality, hash and repr by field.

    A subclass lists its fields in ``_FIELDS`` (and in ``__slots__``) and sets
    them with :meth:`_set`.  Assigning or deleting a field raises
    :class:`AttributeError`, as on a frozen dataclass.  Records are equal only
    to records of the same class with equal fields.
    """

    __slots__ = ()
    #: The fields, in order; those also in ``_NO_REPR`` are left out of ``repr``.
    _FIELDS: tuple[str, ...] = ()
    _NO_REPR: tuple[str, ...] = ()

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._FIELDS if name not in self._NO_REPR
        )
        return f"{type(self).__qualname__}({fields})"

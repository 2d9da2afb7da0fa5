"""Value checks shared by the simulator's options, its control API and its Python methods.

Each check turns a value into the one the simulator keeps, or raises :class:`ValueError` saying what was
expected. The caller adds the name (an option, an argument), so that a wrong value is refused where it is
given and never reaches a request handler: a wrong type once made every later call answer 500.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Check", "Choice", "Choices", "Flag", "Keys", "Maybe", "Number", "PathValue", "Text", "Words"]


class Check:
    """Checks one value; :attr:`describe` says what is accepted (in the docs table and in error messages)."""

    describe = "any value"

    def __call__(self, value: Any) -> Any:
        """The value to keep; ``ValueError`` if it is not acceptable."""
        return value

    def from_text(self, text: str) -> Any:
        """The value a command-line flag's text stands for (then checked by :meth:`__call__`)."""
        return text

    def fail(self, value: Any) -> ValueError:
        shown = repr(value)
        return ValueError(f"expected {self.describe}, got {shown if len(shown) <= 80 else shown[:77] + '...'}")


class Number(Check):
    """A finite int or float (``True`` is not a number here) within ``[minimum, maximum]``; ``integer``: ints only."""

    def __init__(self, minimum: float = 0, maximum: float | None = None, *, integer: bool = False) -> None:
        self.minimum, self.maximum, self.integer = minimum, maximum, integer
        kind = "an integer" if integer else "a number"
        top = f" and <= {maximum:g}" if maximum is not None else ""
        self.describe = f"{kind} >= {minimum:g}{top}"

    def __call__(self, value: Any) -> Any:
        allowed = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed) or not math.isfinite(value):
            raise self.fail(value)
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            raise self.fail(value)
        return value

    def from_text(self, text: str) -> Any:
        try:
            return int(text) if self.integer else float(text)
        except ValueError:
            raise self.fail(text) from None


class Flag(Check):
    """``True`` or ``False``, nothing else (``"no"`` and ``1`` are refused: both would read as true)."""

    describe = "true or false"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise self.fail(value)
        return value


class Choice(Check):
    """One of a few strings."""

    def __init__(self, *values: str) -> None:
        self.values = values
        self.describe = "one of " + ", ".join(repr(v) for v in values)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.values:
            raise self.fail(value)
        return value


class Choices(Check):
    """A list of some of a few strings (on the command line: comma-separated)."""

    def __init__(self, *values: str) -> None:
        self.values = values
        self.describe = "a list of " + ", ".join(repr(v) for v in values)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise self.fail(value)
        items = list(value)
        if not all(isinstance(v, str) and v in self.values for v in items):
            raise self.fail(value)
        return items

    def from_text(self, text: str) -> Any:
        return [part.strip() for part in text.split(",") if part.strip()]


class Text(Check):
    """A string. ``empty``: ``""`` allowed; ``longest``: at most that many characters; ``header``: no control
    characters (it goes into an HTTP header, where a line break would end it)."""

    def __init__(self, *, empty: bool = True, longest: int | None = None, header: bool = False) -> None:
        self.empty, self.longest, self.header = empty, longest, header
        self.describe = "a string" if empty else "a non-empty string"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or (not self.empty and not value):
            raise self.fail(value)
        if self.longest is not None and len(value) > self.longest:
            raise ValueError(f"expected at most {self.longest} characters, got {len(value)}")
        if self.header and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("expected a string without control characters")
        return value


class Keys(Check):
    """A set of strings (API keys)."""

    describe = "a list of strings"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise self.fail(value)
        keys = set(value)
        if not all(isinstance(k, str) for k in keys):
            raise self.fail(value)
        return keys


class PathValue(Check):
    """A file path (a string or path-like object)."""

    describe = "a file path"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value:
            raise self.fail(value)
        return Path(value)


class Words(Check):
    """A mapping of some of ``keys`` to non-empty strings (on the command line: ``KEY=WORD,KEY=WORD``)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = tuple(keys)
        self.describe = "a mapping of some of " + ", ".join(self.keys) + " to non-empty strings"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise self.fail(value)
        words = dict(value)
        if not all(k in self.keys and isinstance(w, str) and w and len(w) <= 100 for k, w in words.items()):
            raise self.fail(value)
        return words

    def from_text(self, text: str) -> Any:
        words: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in text.split(","))):
            key, sep, word = pair.partition("=")
            if not sep:
                raise ValueError(f"expected KEY=WORD pairs with KEY in {self.keys}, got {pair!r}")
            words[key.strip()] = word.strip()
        return words


class Maybe(Check):
    """``None``, or what ``inner`` accepts."""

    def __init__(self, inner: Check) -> None:
        self.inner = inner
        self.describe = f"null or {inner.describe}"

    def __call__(self, value: Any) -> Any:
        return None if value is None else self.inner(value)

    def from_text(self, text: str) -> Any:
        return self.inner.from_text(text)

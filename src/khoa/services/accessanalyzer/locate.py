"""Where things are in a policy document: a JSON reader that remembers the span of every key and value,
so ValidatePolicy can answer with AWS's locations (a path of ``value``/``key``/``index`` elements and
a span of line, column and offset positions)."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any

Path = tuple[Any, ...]  # str: an object member, int: a list index


class JsonSyntaxError(ValueError):
    def __init__(self, offset: int) -> None:
        super().__init__(f"JSON syntax error at {offset}")
        self.offset = offset


@dataclass
class Located:
    """A parsed document and the spans of its values (by path) and keys (by path ending in the key)."""

    text: str
    value: Any = None
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    _newlines: list[int] | None = None

    def position(self, offset: int) -> dict[str, int]:
        if self._newlines is None:
            self._newlines = [i for i, char in enumerate(self.text) if char == "\n"]
        line = bisect.bisect_left(self._newlines, offset)  # newlines before the offset
        start = self._newlines[line - 1] + 1 if line else 0
        return {"line": line + 1, "column": offset - start, "offset": offset}

    def location(self, path: Path, *, key: bool = False) -> dict[str, Any]:
        """AWS's Location of the value at ``path`` (or of its last key, when ``key``)."""
        spans = self.keys if key else self.values
        start, end = spans.get(path) or self.values.get(path) or (0, len(self.text))
        elements: list[dict[str, Any]] = []
        for i, step in enumerate(path):
            if isinstance(step, int):
                elements.append({"index": step})
            elif key and i == len(path) - 1:
                elements.append({"key": step})
            else:
                elements.append({"value": step})
        return {"path": elements, "span": {"start": self.position(start), "end": self.position(end)}}


_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


def parse(text: str) -> Located:
    """Parse strict JSON, recording spans; raises :class:`JsonSyntaxError` with the failing offset."""
    located = Located(text)
    reader = _Reader(text, located)
    located.value = reader.value(reader.skip(0), ())[1]
    end = reader.skip(reader.end)
    if end != len(text):
        raise JsonSyntaxError(end)
    return located


class _Reader:
    def __init__(self, text: str, located: Located) -> None:
        self.text = text
        self.located = located
        self.end = 0

    def skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in _WS:
            i += 1
        return i

    def value(self, i: int, path: Path) -> tuple[int, Any]:
        if len(path) > 32:
            raise JsonSyntaxError(i)
        text = self.text
        if i >= len(text):
            raise JsonSyntaxError(i)
        char = text[i]
        result: Any
        if char == "{":
            result = self._object(i, path)
        elif char == "[":
            result = self._list(i, path)
        else:
            try:
                parsed, end = _DECODER.raw_decode(text, i)
            except ValueError:
                raise JsonSyntaxError(i) from None
            if isinstance(parsed, (dict, list)) or (isinstance(parsed, float) and parsed != parsed):
                raise JsonSyntaxError(i)
            self.end = end
            result = parsed
        self.located.values[path] = (i, self.end)
        return self.end, result

    def _object(self, start: int, path: Path) -> dict[str, Any]:
        text = self.text
        out: dict[str, Any] = {}
        i = self.skip(start + 1)
        if i < len(text) and text[i] == "}":
            self.end = i + 1
            return out
        while True:
            if i >= len(text) or text[i] != '"':
                raise JsonSyntaxError(i)
            try:
                key, key_end = _DECODER.raw_decode(text, i)
            except ValueError:
                raise JsonSyntaxError(i) from None
            if key in out:
                raise JsonSyntaxError(i)  # duplicate keys are refused, as the evaluation parser does
            self.located.keys[(*path, key)] = (i, key_end)
            i = self.skip(key_end)
            if i >= len(text) or text[i] != ":":
                raise JsonSyntaxError(i)
            i, out[key] = self.value(self.skip(i + 1), (*path, key))
            i = self.skip(i)
            if i < len(text) and text[i] == ",":
                i = self.skip(i + 1)
                continue
            if i < len(text) and text[i] == "}":
                self.end = i + 1
                return out
            raise JsonSyntaxError(i)

    def _list(self, start: int, path: Path) -> list[Any]:
        text = self.text
        out: list[Any] = []
        i = self.skip(start + 1)
        if i < len(text) and text[i] == "]":
            self.end = i + 1
            return out
        while True:
            i, item = self.value(i, (*path, len(out)))
            out.append(item)
            i = self.skip(i)
            if i < len(text) and text[i] == ",":
                i = self.skip(i + 1)
                continue
            if i < len(text) and text[i] == "]":
                self.end = i + 1
                return out
            raise JsonSyntaxError(i)

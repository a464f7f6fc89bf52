"""Values computed once per live object: a conversation carries the same Image and Audio objects
every turn, and re-running a tower or a transcriber on them would be wasted."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

V = TypeVar("V")


class ObjectCache:
    """Least recently used entries dropped past `size`. An entry holds its object, so the object's id
    cannot be reused by another while the entry lives."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple, tuple[object, object]] = OrderedDict()

    def get(self, obj: object, compute: Callable[[], V], tag: Hashable = None) -> V:
        key = (id(obj), tag)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is obj:
            self._entries.move_to_end(key)
            return hit[1]
        value = compute()
        self._entries[key] = (obj, value)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

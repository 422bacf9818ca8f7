"""Per-process memory of data that small datasets read again and again, capped in bytes (oldest dropped first).

Two users: ``pipeline.eval_loader`` keeps whole evaluation passes of deterministic transforms, and
``shard_reader.ShardReader`` keeps the decoded images of PNG shards it read without a problem, so that a training
stream that draws the same few shards hundreds of times parses their tars and decodes their PNGs once. Both are keyed
by file stats (path, size, modification time), so a rewritten file is read again.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Hashable


class ByteCappedMemo:
    """A least-recently-used map whose values have a size in bytes, at most ``cap`` bytes in all."""

    def __init__(self, cap: int):
        self.cap, self.total = cap, 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()

    def get(self, key: Hashable):
        """The value kept under ``key`` (now the most recently used), else None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value, nbytes: int) -> None:
        """Keep ``value`` (``nbytes`` large) unless it alone exceeds the cap; drop the oldest values to make room."""
        if nbytes > self.cap:
            return
        old = self._items.pop(key, None)
        self.total += nbytes - (old[1] if old else 0)
        self._items[key] = (value, nbytes)
        while self.total > self.cap:
            self.total -= self._items.popitem(last=False)[1][1]


def file_stamp(path: Path) -> tuple:
    """What identifies a file's contents for the memos: resolved path, inode, size and modification time (ns)."""
    st = path.stat()
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns

"""Connection counts shared by the worker processes: in all, and per client address, exact.

The per-address limit must count exactly the connections of one address: counting in hash
buckets lets an attacker pick an address that shares a victim's bucket and lock the victim
out. An address is an IPv4 address, or the /64 network of an IPv6 one (one IPv6 host
usually owns a whole /64, and can pick any address in it).

Each worker owns one row of a shared memory table (``mmap`` before ``fork``): its total and a
small open-addressing hash table of (address, count) entries, linear probing with backward
shift deletion, so it never fills with tombstones. Only the owner writes its row; deciding
on a new connection reads every row. No lock is taken: a reader racing a writer may miss
one entry for an instant, which lets at most a connection or two more through under a race,
never locks anyone out. The supervisor zeroes the row of a worker that died.

Memory is bounded by the connection cap: each row holds twice ``max_connections`` entries
(a worker never holds more connections than that), 24 bytes each.
"""

from __future__ import annotations

import functools
import ipaddress
import mmap
import os

__all__ = ["ConnectionCounts", "SharedCounts", "address_key"]

_EMPTY = 0
# Entry tags: which family the key belongs to, so an IPv4 address and an IPv6 /64 with the
# same number never meet.
_V4 = 4
_V6 = 6
_ENTRY = 3  # cells per entry: tag, key, count
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing multiplier (2^64 / golden ratio)


@functools.lru_cache(maxsize=4096)
def address_key(ip: str) -> tuple[int, int]:
    """(tag, key) of a client address: IPv4 as itself, IPv6 by its /64 network (an
    IPv4-mapped IPv6 address counts as the IPv4 address). Remembered for the most recent
    addresses: each connection asks three times (counted, limited, released)."""
    address = ipaddress.ip_address(ip.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            return _V6, int(address) >> 64
        address = mapped
    return _V4, int(address)


class SharedCounts:
    """The shared table: one row per worker slot. Create before forking."""

    def __init__(self, slots: int, max_connections: int) -> None:
        self.slots = slots
        capacity = 8
        while capacity < 2 * max_connections:
            capacity *= 2
        self.capacity = capacity
        self.row = 1 + capacity * _ENTRY  # cell 0 is the worker's total
        self._mem = mmap.mmap(-1, slots * self.row * 8)  # anonymous, shared across fork()
        self.cells = memoryview(self._mem).cast("Q")
        # Keyed per server start: which addresses collide in a row cannot be worked out
        # from outside, so nobody can make the probes long on purpose.
        self.secret = int.from_bytes(os.urandom(8), "little") | 1
        self._shift = 64 - (capacity.bit_length() - 1)

    def slot(self, index: int) -> ConnectionCounts:
        return ConnectionCounts(self, index)

    def clear(self, index: int) -> None:
        start = index * self.row
        self.cells[start : start + self.row] = memoryview(bytes(self.row * 8)).cast("Q")

    def total(self) -> int:
        cells = self.cells
        return sum(cells[i * self.row] for i in range(self.slots))

    def home(self, key: int) -> int:
        """The first probe position of ``key`` in a row."""
        return (((key ^ self.secret) * _GOLDEN) & _MASK64) >> self._shift

    def find(self, index: int, tag: int, key: int) -> int:
        """Cell of the entry for (tag, key) in row ``index``, or of the empty entry where
        it would go."""
        cells = self.cells
        entries = index * self.row + 1
        mask = self.capacity - 1
        position = self.home(key)
        for _ in range(self.capacity):
            cell = entries + position * _ENTRY
            found = cells[cell]
            if found == _EMPTY or (found == tag and cells[cell + 1] == key):
                return cell
            position = (position + 1) & mask
        return -1  # full: cannot happen while rows hold twice the connection cap

    def for_address(self, tag: int, key: int) -> int:
        cells = self.cells
        count = 0
        for index in range(self.slots):
            cell = self.find(index, tag, key)
            if cell >= 0 and cells[cell] != _EMPTY:
                count += cells[cell + 2]
        return count


class ConnectionCounts:
    """One worker's view: it writes its own row and reads all of them."""

    def __init__(self, table: SharedCounts, index: int) -> None:
        self.table = table
        self.index = index
        self.base = index * table.row

    def total(self) -> int:
        return self.table.total()

    def for_ip(self, ip: str) -> int:
        """Connections from this address (IPv6: its /64) in every worker."""
        return self.table.for_address(*address_key(ip))

    def add(self, ip: str) -> bool:
        """Count a connection; False (nothing counted) in the impossible case of a full row,
        and the caller refuses the connection."""
        tag, key = address_key(ip)
        cells = self.table.cells
        cell = self.table.find(self.index, tag, key)
        if cell < 0:
            return False
        if cells[cell] == _EMPTY:
            # Key and count before the tag: a reader that sees the tag sees a whole entry.
            cells[cell + 1] = key
            cells[cell + 2] = 1
            cells[cell] = tag
        else:
            cells[cell + 2] += 1
        cells[self.base] += 1
        return True

    def remove(self, ip: str) -> None:
        tag, key = address_key(ip)
        table = self.table
        cells = table.cells
        cell = table.find(self.index, tag, key)
        if cell < 0 or cells[cell] == _EMPTY:
            return  # never counted
        cells[self.base] -= 1
        if cells[cell + 2] > 1:
            cells[cell + 2] -= 1
            return
        self._delete(cell)

    def _delete(self, cell: int) -> None:
        """Empty an entry and shift later entries of its probe run back, so that lookups
        never stop early at a hole (backward shift deletion, no tombstones). Each step
        empties before it fills: a reader racing it can only miss an entry, never count one
        twice."""
        table = self.table
        cells = table.cells
        entries = self.base + 1
        mask = table.capacity - 1
        cells[cell] = _EMPTY
        hole = (cell - entries) // _ENTRY
        position = hole
        while True:
            position = (position + 1) & mask
            at = entries + position * _ENTRY
            tag = cells[at]
            if tag == _EMPTY:
                return
            key = cells[at + 1]
            # The entry may move into the hole unless its home lies cyclically in
            # (hole, position]: a lookup would then start after the hole and never reach it.
            if (position - table.home(key)) & mask >= (position - hole) & mask:
                count = cells[at + 2]
                cells[at] = _EMPTY
                to = entries + hole * _ENTRY
                cells[to + 1] = key
                cells[to + 2] = count
                cells[to] = tag
                hole = position

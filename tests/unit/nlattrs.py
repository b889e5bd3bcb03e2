"""Netlink attributes as a list, in order and with their flags (the golden
tests' view of a message; nsnet.kernel.netlink.parse_attrs keeps the last
of each type and drops the flags)."""

import struct


def attr_list(data: bytes, offset: int = 0) -> list[tuple[int, bytes]]:
    out = []
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.append((kind, data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return out

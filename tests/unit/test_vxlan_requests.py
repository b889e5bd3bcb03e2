"""The VXLAN data-plane requests, byte for byte against iproute2.

Each tests/unit/golden/vxlan/*.hex holds the request ``ip``/``bridge``
(iproute2 6.1) sent for the command on its first line, captured with strace
by capture.sh.  nsnet's builders (nsnet.kernel.vxlan) must produce the same
bytes, except the header's sequence number and the ifindex iproute2 looked
up (both masked).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nsnet.kernel import netlink as nl
from nsnet.kernel.vxlan import (
    VxlanSpec,
    overlay_mtu,
    req_fdb_append,
    req_fdb_del,
    req_neigh_del,
    req_neigh_replace,
    req_new_vxlan,
)

GOLDEN = Path(__file__).parent / "golden" / "vxlan"
MAC, VTEP, IP = "02:42:0a:c8:00:05", "198.51.100.12", "10.200.0.5"
UNDERLAY_INDEX, VX_INDEX = 2, 4  # what the capture's namespace had (masked anyway)

BUILT = {
    "link_add": lambda: req_new_vxlan(VxlanSpec("vx0", 42, "198.51.100.11", UNDERLAY_INDEX,
                                                mtu=1450)),
    "link_add_master": lambda: req_new_vxlan(VxlanSpec("vx0", 42, "198.51.100.11",
                                                       UNDERLAY_INDEX, mtu=1450, master=3)),
    "fdb_append": lambda: req_fdb_append(VX_INDEX, MAC, VTEP),
    "fdb_del": lambda: req_fdb_del(VX_INDEX, MAC, VTEP),
    "neigh_replace": lambda: req_neigh_replace(VX_INDEX, IP, MAC),
    "neigh_del": lambda: req_neigh_del(VX_INDEX, IP),
}


def _golden(name: str) -> tuple[str, bytes]:
    lines = (GOLDEN / f"{name}.hex").read_text().splitlines()
    return lines[0][2:], bytes.fromhex("".join(lines[1:]))


def _framed(req: nl.Request) -> bytes:
    flags = req.flags | nl.NLM_F_REQUEST | nl.NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(req.body), req.msg_type, flags, 0, 0) + req.body


def _masked(message: bytes, name: str) -> bytes:
    out = bytearray(message)
    out[8:12] = b"\0" * 4  # seq
    if not name.startswith("link_add"):
        out[20:24] = b"\0" * 4  # ndmsg ifindex
        return bytes(out)
    at = out.find(struct.pack("=HH", 8, 3), 0x40)  # IFLA_VXLAN_LINK: the underlay
    out[at + 4 : at + 8] = b"\0" * 4
    at = out.find(struct.pack("=HH", 8, 10))  # IFLA_MASTER: the bridge
    if at >= 0:
        out[at + 4 : at + 8] = b"\0" * 4
    return bytes(out)


def test_every_golden_file_has_a_builder():
    assert {p.stem for p in GOLDEN.glob("*.hex")} == set(BUILT)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_request_matches_iproute2_byte_for_byte(name: str):
    _cmd, captured = _golden(name)
    ours = _framed(BUILT[name]())
    assert len(ours) == len(captured)
    assert _masked(ours, name) == _masked(captured, name)


def test_the_device_is_made_with_learning_off_and_arp_proxy():
    cmd, _ = _golden("link_add")
    assert "nolearning proxy" in cmd and "dstport 4789" in cmd


def test_overlay_mtu_leaves_room_for_the_vxlan_headers():
    assert overlay_mtu(1500) == 1450
    assert overlay_mtu(9000) == 8950


def test_vni_range_is_checked():
    with pytest.raises(ValueError):
        VxlanSpec("vx0", 0, "198.51.100.1", 2)
    with pytest.raises(ValueError):
        VxlanSpec("vx0", 1 << 24, "198.51.100.1", 2)

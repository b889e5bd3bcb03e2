"""Every rtnetlink request builder of kernel/rtnl.py, byte for byte against
iproute2's ``ip`` (the independent encoder).

Each tests/unit/golden/rtnl/*.hex holds the request ``ip ARGS`` (iproute2
6.1) sent, captured with strace by capture.sh in a throwaway namespace; its
first line is the command.  nsnet's builder, given the same values, must
produce the same bytes except the header's sequence number.  Where nsnet
deliberately differs, the difference is named below with the reason, and the
rest of the message must still match exactly.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nsnet.kernel import netlink as nl
from nsnet.kernel import rtnl as r

GOLDEN = Path(__file__).parent / "golden" / "rtnl"
D0 = 3  # d0's ifindex in the capture namespace (lo 1, d1 2... as capture.sh makes them)
BRX = 4  # the bridge brx's
FD = 4  # the netns fd `ip ... netns /proc/self/ns/net` opened


def _golden(name: str) -> tuple[str, bytes]:
    lines = (GOLDEN / f"{name}.hex").read_text().splitlines()
    assert lines[0].startswith("# ip "), name
    return lines[0][5:], bytes.fromhex("".join(lines[1:]))


def _framed(req: nl.Request) -> bytes:
    """As ip frames it: REQUEST|ACK plus the builder's flags, pid 0, seq 0."""
    body = req.body
    flags = req.flags | nl.NLM_F_REQUEST | nl.NLM_F_ACK
    return struct.pack("=IHHII", 16 + len(body), req.msg_type, flags, 0, 0) + body


def _seq0(message: bytes) -> bytes:
    return message[:8] + b"\0" * 4 + message[12:]


SAME = {  # golden name -> (ip arguments, nsnet's request for the same thing)
    # (6: the fd `ip netns set` opened on /run/netns/x)
    "new_nsid": ("netns set x 1073741824", r.req_new_nsid(6, 1 << 30)),
    "add_addr": ("addr add 10.1.0.3/24 dev d0", r.req_add_addr(D0, "10.1.0.3/24")),
    "add_route_default_via": ("route add default via 10.1.0.1",
                              r.req_add_route("default", "10.1.0.1")),
    "add_route_default_via_dev": ("route add default via 10.1.0.1 dev d0",
                                  r.req_add_route("default", "10.1.0.1", oif=D0)),
    "add_route_dst_via": ("route add 10.74.0.0/24 via 10.1.0.1",
                          r.req_add_route("10.74.0.0/24", "10.1.0.1")),
    "set_link_up": ("link set dev d0 up", r.req_set_link(index=D0, up=True)),
    "set_link_down": ("link set dev d0 down", r.req_set_link(index=D0, up=False)),
    "set_link_group": ("link set dev d0 group 1234567", r.req_set_link(index=D0,
                                                                       group=1234567)),
    "del_link": ("link del dev d0", r.req_del_link(index=D0)),
    "del_group": ("link del group 1234567", r.req_del_group(1234567)),
    "del_addr": ("addr del 10.1.0.2/24 dev d0", r.req_del_addr(D0, "10.1.0.2/24")),
}

NESTED_DIFF = ("nsnet flags nested attributes NLA_F_NESTED (as the kernel's strict "
               "validation prefers) and ends its kind strings with a NUL; ip does neither")
# golden name -> (ip arguments, nsnet's request, the deliberate difference(s), and how ip's
# canonical form is rewritten into nsnet's where the difference is more than encoding)
DIFFERENT = {
    "del_route_dst": (
        "route del 10.1.0.0/24", r.req_del_route("10.1.0.0/24"),
        "ip asks for any scope (RT_SCOPE_NOWHERE); nsnet for universe scope, the scope of "
        "the gateway routes it makes, so a link-scope route of the same prefix (a "
        "connected route, someone else's) is never deleted by it",
        lambda c: (c[0], c[1][:6] + b"\x00" + c[1][7:], c[2])),
    "del_neigh": (
        "neigh del 10.1.0.9 dev d0", r.req_del_neigh(D0, "10.1.0.9"),
        "ip fills ndm_state NUD_PERMANENT, which the kernel ignores on delete; nsnet sends 0",
        lambda c: (c[0], c[1][:8] + b"\x00\x00" + c[1][10:], c[2])),
    "set_link_alias": (
        "link set dev d0 alias nsnet:ep:abc", r.req_set_link(index=D0, alias="nsnet:ep:abc"),
        "ip sends the alias without its NUL; nsnet's strings carry one (the kernel copies "
        "up to it either way: the alias read back is the same)", None),
    "new_bridge_up": ("link add name br0 up type bridge", r.req_new_bridge("br0"),
                      NESTED_DIFF, None),
    "new_veth": ("link add name h0 type veth peer name p0",
                 r.req_new_veth(r.VethSpec("h0", "p0", FD)),
                 NESTED_DIFF + "; nsnet always names the peer's namespace (IFLA_NET_NS_FD), "
                 "so this capture lacks the one attribute: added to ip's",
                 lambda c: _add_peer_attr(c, (nl.IFLA_NET_NS_FD, struct.pack("=I", FD))))
    ,
    "new_veth_peer_in_netns": (
        "link add name h0 type veth peer name p0 netns /proc/self/ns/net",
        r.req_new_veth(r.VethSpec("h0", "p0", FD)),
        NESTED_DIFF + "; and the peer's attributes come in another order (ip: "
        "IFLA_NET_NS_FD first; the kernel parses attributes by type, not position)", None),
    "new_veth_up_peer_in_netns": (
        "link add name h0 up type veth peer name p0 netns /proc/self/ns/net",
        r.req_new_veth(r.VethSpec("h0", "p0", FD, up=True)),
        NESTED_DIFF + "; and the peer's attributes come in another order (as "
        "new_veth_peer_in_netns)", None),
    "bridge_mcast_snooping_off": (
        "link set dev brx type bridge mcast_snooping 0",
        r.req_bridge_mcast_snooping(BRX, False), NESTED_DIFF, None),
    "set_hairpin": (
        "link set dev d0 type bridge_slave hairpin on",
        r.req_set_link(index=D0, hairpin=True),
        NESTED_DIFF + "; ip names the port type as IFLA_INFO_KIND \"bridge_slave\", nsnet as "
        "IFLA_INFO_SLAVE_KIND \"bridge\" (both reach the bridge's slave_changelink with the "
        "same IFLA_BRPORT_MODE payload)",
        lambda c: _rekind(c)),
}


def test_every_capture_is_tested():
    assert {p.stem for p in GOLDEN.glob("*.hex")} == set(SAME) | set(DIFFERENT)


@pytest.mark.parametrize("name", sorted(SAME))
def test_request_matches_ip_byte_for_byte(name: str):
    args, req = SAME[name]
    command, captured = _golden(name)
    assert command == args
    assert _seq0(_framed(req)) == _seq0(captured)


# ---------------------------------------------------------- canonical form
# nested attributes per message: type -> (bytes of fixed struct before its
# attributes, the nested types inside it); strings compared without their NUL
LINK_NESTS = {nl.IFLA_LINKINFO: (0, {nl.IFLA_INFO_DATA: (0, {nl.VETH_INFO_PEER: (
    nl.IFINFO.size, {})}), r.IFLA_INFO_SLAVE_DATA: (0, {})})}
STRINGS = {nl.IFLA_IFNAME, nl.IFLA_IFALIAS}
KIND_STRINGS = {nl.IFLA_INFO_KIND, r.IFLA_INFO_SLAVE_KIND}
FIXED = {nl.RTM_NEWLINK: nl.IFINFO.size, nl.RTM_DELLINK: nl.IFINFO.size, nl.RTM_NEWADDR: 8,
         nl.RTM_NEWROUTE: 12, nl.RTM_DELROUTE: 12, nl.RTM_DELNEIGH: 12}


def _tree(data: bytes, nests: dict, strings: set) -> tuple:
    out, pos = [], 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        kind &= ~0x8000  # NLA_F_NESTED
        value = data[pos + 4:pos + length]
        if kind in nests:
            fixed, inner = nests[kind]
            peer_strings = STRINGS if fixed else KIND_STRINGS
            value = (value[:fixed], _tree(value[fixed:], inner, peer_strings))
        elif kind in strings:
            value = value.rstrip(b"\0")
        out.append((kind, value))
        pos += (length + 3) & ~3
    return tuple(sorted(out, key=repr))


def _canonical(message: bytes) -> tuple:
    msg_type, flags = struct.unpack_from("=HH", message, 4)
    fixed = FIXED[msg_type]
    body = message[16:]
    nests = LINK_NESTS if msg_type in (nl.RTM_NEWLINK, nl.RTM_DELLINK) else {}
    return (msg_type, flags), body[:fixed], _tree(body[fixed:], nests, STRINGS)


def _add_peer_attr(c: tuple, extra: tuple) -> tuple:
    head, fixed, attrs = c

    def walk(tree: tuple, path: list[int]) -> tuple:
        if not path:
            return tuple(sorted((*tree, extra), key=repr))
        return tuple((k, (v[0], walk(v[1], path[1:])) if k == path[0] else v) for k, v in tree)

    return head, fixed, walk(attrs, [nl.IFLA_LINKINFO, nl.IFLA_INFO_DATA, nl.VETH_INFO_PEER])


def _rekind(c: tuple) -> tuple:
    head, fixed, attrs = c
    out = []
    for k, v in attrs:
        if k == nl.IFLA_LINKINFO:
            inner = [(r.IFLA_INFO_SLAVE_KIND, b"bridge") if (ik, iv) == (
                nl.IFLA_INFO_KIND, b"bridge_slave") else (ik, iv) for ik, iv in v[1]]
            v = (v[0], tuple(sorted(inner, key=repr)))
        out.append((k, v))
    return head, fixed, tuple(out)


@pytest.mark.parametrize("name", sorted(DIFFERENT))
def test_deliberate_differences_are_only_these(name: str):
    args, req, why, rewrite = DIFFERENT[name]
    command, captured = _golden(name)
    assert command == args and why
    ours, theirs = _canonical(_framed(req)), _canonical(captured)
    assert ours == (rewrite(theirs) if rewrite else theirs)
    assert _seq0(_framed(req)) != _seq0(captured)  # the difference is real, and named


def test_canonical_form_still_sees_a_wrong_value():
    _, captured = _golden("new_veth_peer_in_netns")
    wrong = r.req_new_veth(r.VethSpec("h0", "p1", FD))
    assert _canonical(_framed(wrong)) != _canonical(captured)


GOLDEN_TESTS = ("test_rtnl_golden", "test_ipv6_netlink", "test_netem", "test_vxlan_requests",
                "test_inside_views", "test_tc_golden", "test_conntrack_golden")


def test_every_request_builder_has_a_golden_test():
    """Every ``req_*`` builder in kernel/ is checked against an independent
    encoder's bytes by one of the golden test modules (a new builder without
    a capture fails here)."""
    import re

    kernel = Path(r.__file__).parent
    builders = {m for f in kernel.glob("*.py")
                for m in re.findall(r"^def (req_\w+)", f.read_text(), re.M)}
    here = Path(__file__).parent
    tests = "\n".join((here / f"{name}.py").read_text() for name in GOLDEN_TESTS)
    untested = {b for b in builders if not re.search(rf"\b{b}\(", tests)}
    assert builders and not untested, sorted(untested)

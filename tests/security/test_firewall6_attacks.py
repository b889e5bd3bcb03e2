"""The IPv6 firewall of real nsnet networks attacked (#16): a LAN neighbour
routing straight to endpoints' IPv6 addresses, an endpoint of one network
reaching into another, spoofed IPv6 sources, and an internal network.

One sandbox for the module; the outside (2001:db8::2) has a route to
fd00::/16 via the host (2001:db8::1), as a neighbour trying direct routing
would.  Attacks are hand-built frames watched where they would land (a
sniffer on the target's interface); each test shows the legitimate path
working in the same setup.

  pub  dual-stack NAT   fd00:71::/64 10.71.0.0/24  p1 ::2  -p 8080:80
  oth  IPv6-only NAT    fd00:72::/64               o1 ::2
  rtd  IPv6-only routed fd00:73::/64               r1 ::2  -p 8083:83
  int  IPv6-only internal fd00:74::/64             i1 ::2
"""

from __future__ import annotations

import json
import os
import select
import socket

import pytest
from frames import Sniffer, UdpListener, ether_frame, ipv4_packet, ipv6_packet, link_mac, send_frame

from conftest import Sandbox
from world import HOST_IP, OUT_IP, World

HOST6, OUT6 = "2001:db8::1", "2001:db8::2"
P1, O1, R1, I1 = "fd00:71::2", "fd00:72::2", "fd00:73::2", "fd00:74::2"


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory):
    box = Sandbox(tmp_path_factory.mktemp("v6sec"))
    world = None
    try:
        world = World(box)
        box.host("ip", "addr", "add", f"{HOST6}/64", "dev", box.name("up"), "nodad")
        world.out("ip", "addr", "add", f"{OUT6}/64", "dev", "eth0", "nodad")
        world.out("ip", "-6", "route", "add", "fd00::/16", "via", HOST6)
        ok = world.ok
        ok("network", "create", "pub", "--subnet", "10.71.0.0/24", "--subnet", "fd00:71::/64")
        ok("network", "create", "oth", "--subnet", "fd00:72::/64", "--no-ipv4")
        ok("network", "create", "rtd", "--subnet", "fd00:73::/64", "--no-ipv4",
           "--ipv6-mode", "routed")
        ok("network", "create", "int", "--subnet", "fd00:74::/64", "--no-ipv4", "--internal")
        ok("connect", "pub", ns(box, "p1"), "--create", "-p", "8080:80")
        ok("connect", "oth", ns(box, "o1"), "--create")
        ok("connect", "rtd", ns(box, "r1"), "--create", "-p", "8083:83")
        ok("connect", "int", ns(box, "i1"), "--create")
        world.serve_in(ns(box, "p1"), "tcp", 80, 81)
        world.serve_in(ns(box, "p1"), "udp", 81)
        world.serve_in(ns(box, "r1"), "tcp", 83, 84)
        world.serve_in(ns(box, "i1"), "tcp", 85)
        yield world
    finally:
        if world:
            world.close()
        box.close()


def ns(box: Sandbox, role: str) -> str:
    return box.name(role)


def path(w: World, role: str) -> str:
    return os.path.join(w.box.netns_dir, ns(w.box, role))


def bridge_mac(w: World, net: str) -> str:
    bridge = json.loads(w.ok("network", "inspect", net))[0]["bridge"]
    return link_mac(w.box.host_path, bridge)


def from_outside(w: World, dst: str, proto: str, dport: int, src: str = OUT6) -> None:
    """A LAN neighbour's frame to the host's MAC, destination ``dst``."""
    frame = ether_frame(link_mac(w.out_path, "eth0"), link_mac(w.box.host_path, w.box.name("up")),
                        ipv6_packet(src, dst, proto, 40001, dport))
    send_frame(w.out_path, "eth0", frame)


def from_endpoint(w: World, role: str, net: str, src: str, dst: str, proto: str,
                  dport: int) -> None:
    """An endpoint ignoring its routing table: a frame to its gateway's MAC,
    with any source it likes."""
    frame = ether_frame(link_mac(path(w, role), "eth0"), bridge_mac(w, net),
                        ipv6_packet(src, dst, proto, 40002, dport))
    send_frame(path(w, role), "eth0", frame)


@pytest.mark.attack(
    attack="LAN neighbour routes TCP SYNs and UDP straight to endpoints' IPv6 addresses "
           "(NAT network, unpublished port of a routed network, internal network)",
    promise="unsolicited inbound IPv6 never reaches an endpoint: only published ports "
            "(DNAT on the host's address; in routed mode the published container port)",
    defect="#16")
def test_lan_neighbour_cannot_reach_endpoints_over_ipv6(w: World) -> None:
    with Sniffer(path(w, "p1"), "eth0", 80, 81) as p1, \
            Sniffer(path(w, "r1"), "eth0", 84) as r1, \
            Sniffer(path(w, "i1"), "eth0", 85) as i1:
        from_outside(w, P1, "tcp", 80)
        from_outside(w, P1, "tcp", 81)
        from_outside(w, P1, "udp", 81)
        from_outside(w, R1, "tcp", 84)
        from_outside(w, I1, "tcp", 85)
        assert p1.collect(1.0) == [] and r1.collect(0.1) == [] and i1.collect(0.1) == []
    # the legitimate paths: the published port on the host's v6 address, and
    # a routed network's published container port directly
    got = w.ask_all([("outside", "tcp", HOST6, 8080), ("outside", "tcp", R1, 83)])
    assert got == [f"{OUT6} 80", f"{OUT6} 83"]


@pytest.mark.attack(
    attack="an endpoint of one IPv6 network sends frames (via its gateway) to endpoints of "
           "a NAT network, a routed network's published and unpublished ports, and an "
           "internal network",
    promise="networks are isolated from each other over IPv6 as over IPv4: only published "
            "ports are open to other networks (Docker: -p makes a port available to "
            "containers in other bridge networks; a routed network's directly)",
    defect="#16")
def test_cross_network_ipv6_is_dropped(w: World) -> None:
    with Sniffer(path(w, "p1"), "eth0", 80) as p1, \
            Sniffer(path(w, "r1"), "eth0", 84) as r1, \
            Sniffer(path(w, "i1"), "eth0", 85) as i1:
        for dst, port in ((P1, 80), (R1, 84), (I1, 85)):
            from_endpoint(w, "o1", "oth", O1, dst, "tcp", port)
        assert p1.collect(1.0) == [] and r1.collect(0.1) == [] and i1.collect(0.1) == []
    o1 = ns(w.box, "o1")
    got = w.ask_all([(o1, "tcp", P1, 80), (o1, "tcp", R1, 84), (o1, "tcp", HOST6, 8080),
                     (o1, "tcp", R1, 83), (o1, "tcp", OUT6, 7000)])
    # published ports (NAT: via the host's address; routed: directly) and the way out
    assert got == [None, None, "fd00:71::1 80", "fd00:73::1 83", f"{HOST6} 7000"]


@pytest.mark.attack(
    attack="an endpoint sends IPv6 with spoofed sources (another network's subnet, the "
           "outside's documentation range) out through its gateway",
    promise="a network's traffic leaves only with a source of its own subnet (IPv6 has no "
            "rp_filter: nsnet's anti-spoofing rule does it)",
    defect="#16")
def test_spoofed_ipv6_sources_are_dropped(w: World) -> None:
    with Sniffer(w.out_path, "eth0", 7009) as out, Sniffer(path(w, "p1"), "eth0", 81) as p1:
        for src in ("fd00:71::99", "2001:db8::77", "fd00:73::2"):
            from_endpoint(w, "o1", "oth", src, OUT6, "udp", 7009)
            from_endpoint(w, "o1", "oth", src, P1, "udp", 81)
        assert out.collect(1.0) == [] and p1.collect(0.1) == []
        # the same frame with the endpoint's own source leaves (masqueraded)
        from_endpoint(w, "o1", "oth", O1, OUT6, "udp", 7009)
        seen = out.collect(1.0)
    assert seen and {s.src for s in seen} == {HOST6}


@pytest.mark.attack(
    attack="an endpoint of an internal IPv6 network sends frames to the outside, to the "
           "host's own IPv6 address, and to another network",
    promise="an internal network reaches nothing but itself and its gateway's DNS, over "
            "IPv6 as over IPv4",
    defect="#16")
def test_internal_network_over_ipv6(w: World) -> None:
    from nsnet.kernel import entered

    fd = os.open(w.box.host_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):  # a host service on every IPv6 address of the host
            svc = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    finally:
        os.close(fd)
    with svc, Sniffer(w.out_path, "eth0", 7010) as out, \
            Sniffer(path(w, "p1"), "eth0", 81) as p1:
        svc.bind(("::", 7011))
        from_endpoint(w, "i1", "int", I1, OUT6, "udp", 7010)
        from_endpoint(w, "i1", "int", I1, HOST6, "udp", 7011)
        from_endpoint(w, "i1", "int", I1, "fd00:74::1", "udp", 7011)  # its gateway
        from_endpoint(w, "i1", "int", I1, P1, "udp", 81)
        assert out.collect(1.0) == [] and p1.collect(0.1) == []
        assert select.select([svc], [], [], 0.1)[0] == []
    # legitimate: its own DNS over IPv6 answers
    dig = w.box.inside(ns(w.box, "i1"), "dig", "+short", "+tries=1", "+time=2",
                       "@fd00:74::1", ns(w.box, "i1"), "AAAA", check=False)
    assert dig.stdout.strip() == I1


@pytest.mark.attack(
    attack="an endpoint of an IPv6-only network (NAT, and internal) gives itself an IPv4 "
           "address and sends IPv4 frames via its gateway to the outside and to the host",
    promise="an IPv6-only network carries no IPv4: nothing is forwarded or accepted by the "
            "host from it (the host forwards IPv4 for its other networks)",
    defect="#16")
def test_ipv6_only_networks_carry_no_ipv4(w: World) -> None:
    with Sniffer(w.out_path, "eth0", 7012) as out, \
            UdpListener(w.box.host_path, HOST_IP, 7013) as host_service:
        for role, net, src in (("o1", "oth", "10.72.0.5"), ("i1", "int", "10.74.0.5")):
            for dst, port in ((OUT_IP, 7012), (HOST_IP, 7013)):
                frame = ether_frame(link_mac(path(w, role), "eth0"), bridge_mac(w, net),
                                    ipv4_packet(src, dst, "udp", 40003, port))
                send_frame(path(w, role), "eth0", frame)
        assert out.collect(1.0) == [] and host_service.collect(0.1) == []
    assert w.box.host("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

"""Dual-stack and IPv6-only networks end to end (#16), through the CLI.

One sandbox for the module (networks get distinct names and subnets), with
the outside world of tests/world.py given IPv6 too::

  outside 2001:db8::2 (+198.51.100.2) --veth-- host 2001:db8::1 (+198.51.100.1)

Each promise is tried from outside and the legitimate path shown in the
same setup, on a dual-stack network (``dual``) and an IPv6-only one
(``only6``): connectivity, NAT egress, routed mode, published ports over
IPv6, isolation, --internal, --no-icc, DNS AAAA and PTR (dig), ping/check,
reconcile after a flush, after damage to v6 objects and after a kill
part-way.  Probes straight to an endpoint's address are sent with a route
to its network on the outside (route_from_outside), so a None is the
firewall's drop, not the outside's own "network unreachable".
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import dnstools
from conftest import Sandbox
from icmp6sniff import MLD, NS, RS, Sniffer, solicited_node
from world import HOST_IP, OUT_IP, World

HOST6, OUT6 = "2001:db8::1", "2001:db8::2"


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory):
    box = Sandbox(tmp_path_factory.mktemp("v6"))
    world = None
    try:
        world = World(box)
        up = box.name("up")
        box.host("ip", "addr", "add", f"{HOST6}/64", "dev", up, "nodad")
        world.out("ip", "addr", "add", f"{OUT6}/64", "dev", "eth0", "nodad")
        yield world
    finally:
        if world:
            world.close()
        box.close()


def inspect(w: World, net: str) -> dict:
    return json.loads(w.ok("network", "inspect", net))[0]


def ip6_of(w: World, net: str, ns: str) -> str:
    return next(e["address6"].split("/")[0] for e in inspect(w, net)["endpoints"]
                if e["netns"] == ns)


def inside(w: World, ns: str, *argv: str) -> str:
    return w.box.inside(ns, *argv).stdout


def dig(w: World, ns: str, *args: str) -> dict:
    return dnstools.dig(os.path.join(w.box.netns_dir, ns), *args)


def answers(msg: dict) -> list[str]:
    return sorted(r[-1] for r in msg["ANSWER"])


@pytest.fixture(scope="module")
def dual(w: World) -> tuple[str, str]:
    """A dual-stack network, two endpoints, one publishing 8080:80."""
    a, b = w.box.name("da"), w.box.name("db")
    w.ok("network", "create", "ds", "--subnet", "10.61.0.0/24", "--subnet", "fd00:61::/64")
    out = w.ok("connect", "ds", a, "--create", "-p", "8080:80", "-p", f"[{HOST6}]:8082:80")
    assert "fd00:61::2/64" in out and "10.61.0.2/24" in out
    w.ok("connect", "ds", b, "--create")
    w.serve_in(a, "tcp", 80)
    return a, b


@pytest.fixture(scope="module")
def only6(w: World) -> tuple[str, str]:
    """An IPv6-only network in the default (NAT) mode: p publishes a TCP
    port, a UDP port and a range; q publishes nothing."""
    p, q = w.box.name("p6"), w.box.name("q6")
    w.ok("network", "create", "o6", "--subnet", "fd00:62::/64", "--no-ipv4")
    w.ok("connect", "o6", p, "--create", "-p", "8090:90", "-p", "8091:91/udp",
         "-p", "8100-8101:100-101")
    w.ok("connect", "o6", q, "--create")
    w.serve_in(p, "tcp", 90, 100, 101)
    w.serve_in(p, "udp", 91)
    w.serve_in(q, "tcp", 90)
    return p, q


def test_dual_stack_addresses_routes_and_sysctls(w: World, dual: tuple[str, str]) -> None:
    a, _ = dual
    net = inspect(w, "ds")
    assert (net["subnet"], net["subnet6"], net["gateway6"]) == ("10.61.0.0/24",
                                                                  "fd00:61::/64", "fd00:61::1")
    listing = json.loads(w.ok("network", "ls", "--json"))
    assert any(n["name"] == "ds" and n["subnet6"] == "fd00:61::/64" for n in listing)
    assert "fd00:61::/64" in w.ok("network", "ls")
    # at once: no tentative address, a default route via the gateway, no
    # link-local address (no DAD/RS traffic on the bridge), no RA accepted
    addrs = inside(w, a, "ip", "-6", "-o", "addr", "show", "dev", "eth0")
    assert "fd00:61::2/64" in addrs and "tentative" not in addrs and "fe80" not in addrs
    assert "default via fd00:61::1" in inside(w, a, "ip", "-6", "route")
    assert inside(w, a, "sysctl", "-n", "net.ipv6.conf.eth0.accept_ra").strip() == "0"
    bridge = net["bridge"]
    gw = w.box.host("ip", "-6", "-o", "addr", "show", "dev", bridge).stdout
    assert "fd00:61::1/64" in gw and "fe80" in gw  # the gateway keeps its link-local
    assert w.box.host("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"


def test_namespaces_created_on_a_dual_stack_network_are_born_quiet(w: World) -> None:
    """connect --create on a dual-stack network: the namespaces are created
    with quiet IPv6 defaults and the interfaces born with them (no
    per-interface write).  The bridge sees no router solicitation, no DAD
    probe and no link-local address from the endpoints; their only
    multicast reports are the joins of their own addresses' solicited-node
    groups (the kernel reports those from ::, having no link-local address:
    what lets neighbour solicitations reach them) -- and they reach each
    other over IPv6 at once."""
    from nsnet import kernel as k

    w.ok("network", "create", "quiet", "--subnet", "10.66.0.0/24", "--subnet", "fd00:66::/64")
    a, b = w.box.name("qa"), w.box.name("qb")
    host = k.open_netns(w.box.host_path)
    sniffer = Sniffer(host, inspect(w, "quiet")["bridge"])
    try:
        w.ok("connect", "quiet", a, b, "--create")
        sniffer.drain(2.5)  # an RS would come ~1 s after the interface is up
        gateway = {src for src in (s for _t, s in sniffer.seen) if src.startswith("fe80:")}
        assert len(gateway) <= 1  # the bridge's own link-local (it keeps one)
        mine = [(t, src) for t, src in sniffer.seen if src not in gateway]
        assert not [t for t, _src in mine if t in (RS, NS) or (t in MLD and t != 143)], mine
        joined = {g for src, groups in sniffer.reports if src == "::" for g in groups}
        assert {src for src, _g in sniffer.reports} <= gateway | {"::"}, sniffer.reports
        assert joined == {solicited_node("fd00:66::2"), solicited_node("fd00:66::3")}, joined
        for ns in (a, b):
            for conf in ("eth0", "default"):
                got = [inside(w, ns, "sysctl", "-n", f"net.ipv6.conf.{conf}.{key}").strip()
                       for key in ("accept_ra", "autoconf", "accept_dad", "addr_gen_mode",
                                   "disable_ipv6")]
                assert got == ["0", "0", "0", "1", "0"], (ns, conf, got)
            addrs = inside(w, ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0")
            assert "fe80" not in addrs and "tentative" not in addrs, addrs
        assert "1 received" in inside(w, a, "ping", "-6", "-c", "1", "-W", "3", "fd00:66::3")
    finally:
        sniffer.close()
        host.close()
        w.ok("network", "rm", "--force", "quiet")


def route_from_outside(w: World, prefix: str) -> None:
    """The outside (a LAN neighbour) routes PREFIX via the host: what lets a
    probe straight to an endpoint's address reach the host's firewall at all
    (without a route it fails in the outside's own stack, proving nothing)."""
    w.out("ip", "-6" if ":" in prefix else "-4", "route", "replace", prefix, "via",
          HOST6 if ":" in prefix else HOST_IP)


def test_dual_stack_connectivity_nat_and_published_ports(w: World,
                                                         dual: tuple[str, str]) -> None:
    a, b = dual
    route_from_outside(w, "fd00:61::/64")
    got = w.ask_all([
        (b, "tcp", "fd00:61::2", 80),       # within the network, over IPv6
        (b, "tcp", "10.61.0.2", 80),        # and IPv4
        (a, "tcp", OUT6, 7000),             # NAT egress: masqueraded to the host's v6
        (a, "tcp", OUT_IP, 7000),
        ("outside", "tcp", HOST6, 8080),    # -p 8080:80 serves both families
        ("outside", "tcp", HOST_IP, 8080),
        ("outside", "tcp", HOST6, 8082),    # [HOST_IP6]:8082:80
        ("outside", "tcp", HOST_IP, 8082),  # ... on that address only
        ("outside", "tcp", "fd00:61::2", 80),  # unsolicited, straight to the endpoint
        ("host", "tcp", HOST6, 8080),       # the host's own connection to its v6 address
    ])
    assert got[:8] == ["fd00:61::3 80", "10.61.0.3 80", f"{HOST6} 7000", f"{HOST_IP} 7000",
                       f"{OUT6} 80", f"{OUT_IP} 80", f"{OUT6} 80", None]
    assert got[8] is None and got[9] is not None


def test_loopback6_publish_refused(w: World, dual: tuple[str, str]) -> None:
    proc = w.box.cli("port", "add", "ds", dual[1], "[::1]:8090:80")
    assert proc.returncode != 0 and "[::1] cannot be published" in proc.stderr


def test_dns_aaaa_and_ptr(w: World, dual: tuple[str, str]) -> None:
    a, b = dual
    assert answers(dig(w, b, "@fd00:61::1", a, "AAAA")) == ["fd00:61::2"]
    assert answers(dig(w, b, "@10.61.0.1", a, "AAAA")) == ["fd00:61::2"]
    assert answers(dig(w, b, "@fd00:61::1", a, "A")) == ["10.61.0.2"]
    ptr = dig(w, b, "@fd00:61::1", "-x", "fd00:61::2")
    assert [r[-1].rstrip(".") for r in ptr["ANSWER"]] == [a]


def test_ipv6_only_network_from_the_ula_pool(w: World, dual: tuple[str, str]) -> None:
    c, d = w.box.name("oc"), w.box.name("od")
    w.ok("network", "create", "v6o", "--ipv6", "--no-ipv4")
    net = inspect(w, "v6o")
    assert net["subnet"] == "" and net["subnet6"].startswith("fd")
    assert net["subnet6"].endswith("::/64")
    w.ok("connect", "v6o", c, d, "--create")
    gw6, ip_c = net["gateway6"], ip6_of(w, "v6o", c)
    with open(os.path.join(w.box.etc_dir, d, "resolv.conf")) as f:
        assert [ln for ln in f.read().splitlines() if ln.startswith("nameserver")] == [
            f"nameserver {gw6}"]
    assert "inet " not in inside(w, c, "ip", "-o", "addr", "show", "dev", "eth0")
    w.serve_in(c, "tcp", 90)
    got = w.ask_all([(d, "tcp", ip_c, 90), (c, "tcp", OUT6, 7000),
                     (d, "tcp", "fd00:61::2", 80),   # isolation: another network
                     (dual[1], "tcp", ip_c, 90)])
    assert got == [f"{ip6_of(w, 'v6o', d)} 90", f"{HOST6} 7000", None, None]
    assert answers(dig(w, d, f"@{gw6}", c, "AAAA")) == [ip_c]
    assert answers(dig(w, d, f"@{gw6}", c, "A")) == []
    doctor = w.box.cli("doctor", c, d, "--json")  # walked over IPv6, the only family
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["families"] == [6]


def test_routed_mode(w: World) -> None:
    r = w.box.name("rr")
    w.ok("network", "create", "rt", "--subnet", "fd00:63::/64", "--no-ipv4",
         "--ipv6-mode", "routed")
    w.ok("connect", "rt", r, "--create", "-p", "8081:81")
    w.serve_in(r, "tcp", 81, 82)
    w.out("ip", "-6", "route", "add", "fd00:63::/64", "via", HOST6)
    got = w.ask_all([("outside", "tcp", "fd00:63::2", 81),   # published: open, directly
                     ("outside", "tcp", "fd00:63::2", 82),   # not published
                     (r, "tcp", OUT6, 7000)])                # no masquerade
    assert got == [f"{OUT6} 81", None, "fd00:63::2 7000"]
    assert "ipv6-routed" in w.ok("network", "ls")


def test_internal_over_ipv6(w: World, dual: tuple[str, str]) -> None:
    i, j = w.box.name("ii"), w.box.name("ij")
    w.ok("network", "create", "in6", "--subnet", "fd00:64::/64", "--no-ipv4", "--internal")
    w.ok("connect", "in6", i, j, "--create")
    w.serve_in(i, "tcp", 93)
    w.out("ip", "-6", "route", "add", "fd00:64::/64", "via", HOST6)
    got = w.ask_all([(j, "tcp", "fd00:64::2", 93), (i, "tcp", OUT6, 7000),
                     (i, "tcp", "fd00:61::2", 80), ("outside", "tcp", "fd00:64::2", 93),
                     (dual[1], "tcp", "fd00:64::2", 93)])
    assert got == ["fd00:64::3 93", None, None, None, None]
    assert answers(dig(w, j, "@fd00:64::1", i, "AAAA")) == ["fd00:64::2"]


def test_reconcile_recreates_a_vanished_namespace_born_quiet(w: World) -> None:
    """A namespace connect --create made on a dual-stack network vanishes (a
    reboot, `ip netns del`): reconcile makes it again with the same birth
    values -- quiet IPv6 defaults, not IPv6 off -- and its endpoint's IPv6
    address and default route work at once (no tentative address, no DAD
    wait)."""
    from nsnet.kernel import remove_netns

    w.ok("network", "create", "reborn", "--subnet", "10.67.0.0/24", "--subnet", "fd00:67::/64")
    a, b = w.box.name("ra"), w.box.name("rb")
    try:
        w.ok("connect", "reborn", a, b, "--create")
        remove_netns(os.path.join(w.box.netns_dir, a))
        out = w.ok("reconcile")
        assert f"netns       {a}" in out and f"endpoint    {a}/eth0" in out, out
        for conf in ("default", "eth0"):
            got = [inside(w, a, "sysctl", "-n", f"net.ipv6.conf.{conf}.{key}").strip()
                   for key in ("accept_ra", "autoconf", "accept_dad", "addr_gen_mode",
                               "disable_ipv6")]
            assert got == ["0", "0", "0", "1", "0"], (conf, got)
        addrs = inside(w, a, "ip", "-6", "-o", "addr", "show", "dev", "eth0")
        assert "fd00:67::2/64" in addrs and "tentative" not in addrs and "fe80" not in addrs
        assert "default via fd00:67::1" in inside(w, a, "ip", "-6", "route")
        # at once: a tentative source address would fail the very first packet
        assert "1 received" in inside(w, a, "ping", "-6", "-c", "1", "-W", "3", "fd00:67::3")
        assert "1 received" in inside(w, a, "ping", "-6", "-c", "1", "-W", "3", "fd00:67::1")
        assert w.ok("reconcile", "--dry-run").startswith("in sync")
    finally:
        w.ok("network", "rm", "--force", "reborn")


def test_ipv4_only_network_keeps_ipv6_off(w: World) -> None:
    v = w.box.name("v4")
    w.ok("network", "create", "only4", "--subnet", "10.65.0.0/24")
    w.ok("connect", "only4", v, "--create")
    assert inside(w, v, "sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6").strip() == "1"
    assert inside(w, v, "ip", "-6", "addr", "show", "dev", "eth0").strip() == ""
    w.ok("network", "rm", "--force", "only4")


def test_reconcile_after_flush(w: World, dual: tuple[str, str],
                               only6: tuple[str, str]) -> None:
    """`nft flush ruleset` with a dual-stack and an IPv6-only network: the
    flush really opens them (no masquerade, unsolicited inbound and
    cross-network traffic get through, published ports stop), and reconcile
    brings back the very ruleset, so all of that is closed again."""
    a, b = dual
    p, q = only6
    route_from_outside(w, "fd00:61::/64")
    route_from_outside(w, "fd00:62::/64")
    before = w.ruleset()
    w.box.host("nft", "flush", "ruleset")
    flushed = w.ask_all([(a, "tcp", OUT6, 7000), (p, "tcp", OUT6, 7000),
                         ("outside", "tcp", "fd00:61::2", 80),
                         ("outside", "tcp", "fd00:62::2", 90),
                         (q, "tcp", "fd00:61::2", 80), (b, "tcp", "fd00:62::2", 90),
                         ("outside", "tcp", HOST6, 8080), ("outside", "tcp", HOST6, 8090)])
    assert flushed == ["fd00:61::2 7000", "fd00:62::2 7000", f"{OUT6} 80", f"{OUT6} 90",
                       "fd00:62::3 80", "fd00:61::3 90", None, None]
    out = w.ok("reconcile")
    assert "firewall" in out
    assert w.ruleset() == before
    got = w.ask_all([(a, "tcp", OUT6, 7000), (p, "tcp", OUT6, 7000),
                     ("outside", "tcp", HOST6, 8080), ("outside", "tcp", HOST6, 8090),
                     ("outside", "udp", HOST6, 8091),
                     ("outside", "tcp", "fd00:61::2", 80), ("outside", "tcp", "fd00:62::2", 90),
                     (q, "tcp", "fd00:61::2", 80), (b, "tcp", "fd00:62::2", 90)])
    assert got == [f"{HOST6} 7000", f"{HOST6} 7000", f"{OUT6} 80", f"{OUT6} 90", f"{OUT6} 91",
                   None, None, None, None]
    assert "firewall" not in w.ok("reconcile", "--dry-run")


def test_removing_an_endpoint_and_interface_damage(w: World, dual: tuple[str, str]) -> None:
    """An endpoint whose IPv6 address was removed by hand is recreated by
    reconcile; disconnect removes its v6 port mappings too."""
    e = w.box.name("de")
    w.ok("connect", "ds", e, "--create", "--ip6", "fd00:61::99", "-p", "8085:80")
    w.serve_in(e, "tcp", 80)
    w.box.inside(e, "ip", "-6", "addr", "del", "fd00:61::99/64", "dev", "eth0")
    assert "recreate" in w.ok("reconcile")
    assert "fd00:61::99/64" in inside(w, e, "ip", "-6", "addr", "show", "dev", "eth0")
    assert w.ask("outside", "tcp", HOST6, 8085) == f"{OUT6} 80"
    w.ok("disconnect", "ds", e)
    assert "8085" not in w.ruleset()


@pytest.mark.parametrize("point", ["bridge:configured", "network_create:firewall",
                                   "connect:inside", "connect:firewall"])
def test_crash_part_way_is_rolled_back(w: World, point: str) -> None:
    """Killed part-way through creating an IPv6-only network or connecting
    to it: the next command rolls it back, leaving nothing of it."""
    before = w.box.fingerprint()
    k = w.box.name("ck")
    env = w.box.env() | {"NSNET_CRASH_AT": point}
    create = ["network", "create", "crash6", "--subnet", "fd00:66::/64", "--no-ipv4"]
    if point.startswith("connect"):
        w.ok(*create)
        before = w.box.fingerprint()
        argv = ["connect", "crash6", k, "--create", "-p", "8086:80"]
    else:
        argv = create
    proc = subprocess.run([*w.box.cli_argv(), *argv], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "rolled back" in w.box.cli("reconcile").stderr + w.ok("reconcile")
    assert w.box.fingerprint() == before
    if point.startswith("connect"):
        w.ok("network", "rm", "crash6")


def test_ping_and_check_over_icmpv6(w: World, dual: tuple[str, str]) -> None:
    """ICMPv6 echo by `ping`; `check` probes both families of a dual-stack
    network: IPv4 alone answering is a failure."""
    _, b = dual
    out = w.ok("ping", "-c", "1", b, "fd00:61::2")
    assert "1 received" in out and "bytes from fd00:61::2" in out
    assert w.box.cli("ping", "-c", "1", "-W", "0.3", b, "fd00:64::2").returncode == 1
    assert "0% dropped" in w.ok("check", "ds")
    w.box.inside(b, "ip", "-6", "addr", "del", "fd00:61::3/64", "dev", "eth0")
    proc = w.box.cli("check", "ds")
    assert proc.returncode != 0 and b in proc.stderr
    w.ok("reconcile")
    assert "0% dropped" in w.ok("check", "ds")


def test_published_ports_on_an_ipv6_only_network(w: World, only6: tuple[str, str]) -> None:
    """-p on an IPv6-only NAT network: TCP, UDP and a range on the host's v6
    address, from a LAN neighbour with a route to the network (so a direct
    probe reaches the firewall); hairpin from a peer and from the endpoint
    itself; the host's own connections.  Nothing on IPv4 (no address to
    forward to), nothing straight to the endpoints."""
    p, q = only6
    route_from_outside(w, "fd00:62::/64")
    got = w.ask_all([
        ("outside", "tcp", HOST6, 8090), ("outside", "udp", HOST6, 8091),
        ("outside", "tcp", HOST6, 8100), ("outside", "tcp", HOST6, 8101),
        (q, "tcp", HOST6, 8090), (q, "udp", HOST6, 8091),    # hairpin from a peer
        (p, "tcp", HOST6, 8100),                             # ... and from itself
        ("host", "tcp", HOST6, 8090),
        ("outside", "tcp", HOST_IP, 8090), ("outside", "udp", HOST_IP, 8091),
        ("outside", "tcp", "fd00:62::2", 90), ("outside", "udp", "fd00:62::2", 91),
        ("outside", "tcp", "fd00:62::3", 90), ("outside", "tcp", HOST6, 8102),
    ])
    assert got == [f"{OUT6} 90", f"{OUT6} 91", f"{OUT6} 100", f"{OUT6} 101",
                   "fd00:62::1 90", "fd00:62::1 91", "fd00:62::1 100", f"{HOST6} 90",
                   None, None, None, None, None, None]
    listing = w.ok("port", "ls", "o6")
    assert "8100" in listing and "8091" in listing


def test_ptr_ping_and_check_on_an_ipv6_only_network(w: World, only6: tuple[str, str]) -> None:
    """PTR under ip6.arpa, `nsnet ping` and `nsnet check` where IPv6 is the
    only family; check fails, naming the namespace, when one loses its link,
    and passes again after reconcile."""
    p, q = only6
    ptr = dig(w, q, "@fd00:62::1", "-x", "fd00:62::2")
    assert [r[-1].rstrip(".") for r in ptr["ANSWER"]] == [p]
    assert dig(w, q, "@fd00:62::1", "-x", "fd00:61::2")["ANSWER"] == []  # another network's
    out = w.ok("ping", "-c", "1", q, "fd00:62::2")
    assert "1 received" in out and "bytes from fd00:62::2" in out
    assert "0% dropped" in w.ok("check", "o6")
    w.box.inside(q, "ip", "link", "set", "eth0", "down")
    proc = w.box.cli("check", "o6")
    assert proc.returncode != 0 and q in proc.stderr
    assert "recreate" in w.ok("reconcile")
    assert "0% dropped" in w.ok("check", "o6")


def test_internal_dual_stack_network(w: World, dual: tuple[str, str]) -> None:
    """--internal on a dual-stack network: neither family leaves, nor reaches
    another network or the host's published ports; nobody outside or on
    another network gets in over either family (direct routes given); its
    endpoints reach each other and the embedded DNS over both."""
    x, y = w.box.name("ix"), w.box.name("iy")
    _, b = dual
    w.ok("network", "create", "ids", "--subnet", "10.69.0.0/24", "--subnet", "fd00:69::/64",
         "--internal")
    w.ok("connect", "ids", x, y, "--create")
    w.serve_in(x, "tcp", 95)
    route_from_outside(w, "fd00:69::/64")
    route_from_outside(w, "10.69.0.0/24")
    got = w.ask_all([
        (y, "tcp", "fd00:69::2", 95), (y, "tcp", "10.69.0.2", 95),
        (x, "tcp", OUT6, 7000), (x, "tcp", OUT_IP, 7000),
        (x, "udp", OUT6, 7000), (x, "udp", OUT_IP, 7000),
        (x, "tcp", "fd00:61::2", 80), (x, "tcp", "10.61.0.2", 80),
        (x, "tcp", HOST6, 8080), (x, "tcp", HOST_IP, 8080),
        ("outside", "tcp", "fd00:69::2", 95), ("outside", "tcp", "10.69.0.2", 95),
        (b, "tcp", "fd00:69::2", 95), (b, "tcp", "10.69.0.2", 95),
    ])
    assert got == ["fd00:69::3 95", "10.69.0.3 95"] + [None] * 12
    # x has a default route of each family: what was dropped left its stack
    assert "default via fd00:69::1" in inside(w, x, "ip", "-6", "route")
    assert "default via 10.69.0.1" in inside(w, x, "ip", "-4", "route")
    assert answers(dig(w, y, "@fd00:69::1", x, "AAAA")) == ["fd00:69::2"]
    assert answers(dig(w, y, "@fd00:69::1", x, "A")) == ["10.69.0.2"]
    assert answers(dig(w, y, "@10.69.0.1", x, "AAAA")) == ["fd00:69::2"]
    ptr = dig(w, y, "@fd00:69::1", "-x", "fd00:69::2")
    assert [r[-1].rstrip(".") for r in ptr["ANSWER"]] == [x]


def test_no_icc_over_ipv6(w: World) -> None:
    """--no-icc on a dual-stack network: its endpoints cannot reach each
    other over either family (TCP or echo); the gateway (the host) still
    reaches them and they still go out."""
    e1, e2 = w.box.name("ne"), w.box.name("nf")
    w.ok("network", "create", "nicc", "--subnet", "10.70.0.0/24", "--subnet", "fd00:70::/64",
         "--no-icc")
    w.ok("connect", "nicc", e1, e2, "--create")
    w.serve_in(e2, "tcp", 80)
    got = w.ask_all([(e1, "tcp", "fd00:70::3", 80), (e1, "tcp", "10.70.0.3", 80),
                     ("host", "tcp", "fd00:70::3", 80), (e1, "tcp", OUT6, 7000)])
    assert got == [None, None, "fd00:70::1 80", f"{HOST6} 7000"]
    assert w.box.cli("ping", "-c", "1", "-W", "0.5", e1, "fd00:70::3").returncode == 1
    assert "1 received" in w.ok("ping", "-c", "1", e1, "fd00:70::1")


def test_routed_ipv6_on_a_dual_stack_network(w: World) -> None:
    """--ipv6-mode routed on a dual-stack network: IPv6 is routed (own
    address out, inbound only to the published container port, directly),
    IPv4 stays NAT (masqueraded out, published through the host port only)."""
    r = w.box.name("rd")
    w.ok("network", "create", "rds", "--subnet", "10.72.0.0/24", "--subnet", "fd00:72::/64",
         "--ipv6-mode", "routed")
    w.ok("connect", "rds", r, "--create", "-p", "8087:87")
    w.serve_in(r, "tcp", 87, 88)
    route_from_outside(w, "fd00:72::/64")
    route_from_outside(w, "10.72.0.0/24")
    got = w.ask_all([
        ("outside", "tcp", "fd00:72::2", 87), ("outside", "tcp", "fd00:72::2", 88),
        ("outside", "tcp", HOST_IP, 8087), ("outside", "tcp", "10.72.0.2", 87),
        (r, "tcp", OUT6, 7000), (r, "tcp", OUT_IP, 7000)])
    assert got == [f"{OUT6} 87", None, f"{OUT_IP} 87", None, "fd00:72::2 7000",
                   f"{HOST_IP} 7000"]


def test_v6_route_gateway_and_forwarding_repaired(w: World) -> None:
    """reconcile repairs what IPv6 adds: an endpoint's v6 default route, the
    bridge's v6 gateway address, net.ipv6.conf.all.forwarding -- each
    removed by hand, named by --dry-run, restored, and traffic (with the
    DNS server on the v6 gateway) works again."""
    m, n = w.box.name("ma"), w.box.name("mb")
    w.ok("network", "create", "rep", "--subnet", "10.73.0.0/24", "--subnet", "fd00:73::/64")
    w.ok("connect", "rep", m, n, "--create")
    w.serve_in(n, "tcp", 80)
    bridge = inspect(w, "rep")["bridge"]
    w.box.inside(m, "ip", "-6", "route", "del", "default")
    w.box.host("ip", "-6", "addr", "del", "fd00:73::1/64", "dev", bridge)
    w.box.host("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
    assert w.ask_all([(m, "tcp", OUT6, 7000), (n, "tcp", OUT6, 7000)]) == [None, None]
    dry = w.box.cli("reconcile", "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    for what in (bridge, f"{m}/eth0", "net.ipv6.conf.all.forwarding"):
        assert what in dry.stdout, (what, dry.stdout)
    assert f"{n}/eth0" not in dry.stdout  # its route and address are intact
    w.ok("reconcile")
    assert "default via fd00:73::1" in inside(w, m, "ip", "-6", "route")
    assert "fd00:73::1/64" in w.box.host("ip", "-6", "addr", "show", "dev", bridge).stdout
    assert w.box.host("sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    assert w.box.cli("reconcile", "--dry-run").returncode == 0
    got = w.ask_all([(m, "tcp", OUT6, 7000), (m, "tcp", "fd00:73::3", 80)])
    assert got == [f"{HOST6} 7000", "fd00:73::2 80"]
    assert answers(dig(w, m, "@fd00:73::1", n, "AAAA")) == ["fd00:73::3"]


def fingerprint6(w: World) -> tuple:
    """The sandbox's fingerprint with the IPv6 side of the host added: its
    global addresses and routes.  (Link-local ones are the kernel's: a
    bridge gets one when its first port gives it carrier, and keeps it.)"""
    def own(lines: str) -> list[str]:
        return sorted(ln.replace(" linkdown", "") for ln in lines.splitlines()
                      if "fe80" not in ln)

    return (w.box.fingerprint(), own(w.box.host("ip", "-6", "-o", "addr", "show").stdout),
            own(w.box.host("ip", "-6", "route", "show").stdout))


@pytest.mark.parametrize("point", ["connect:inside", "connect:applied"])
def test_dual_stack_connect_killed_part_way_is_rolled_back(w: World, point: str) -> None:
    """SIGKILL part-way through connecting to a dual-stack network (both
    families' addresses and routes in, then the v4 and v6 port rules too):
    the next command rolls it all back, IPv6 included; the retry works over
    both families."""
    k = w.box.name("kd")
    w.ok("network", "create", "kds", "--subnet", "10.74.0.0/24", "--subnet", "fd00:74::/64")
    try:
        before = fingerprint6(w)
        argv = ["connect", "kds", k, "--create", "-p", "8089:80"]
        proc = subprocess.run([*w.box.cli_argv(), *argv], capture_output=True, text=True,
                              env=w.box.env() | {"NSNET_CRASH_AT": point}, timeout=60)
        assert proc.returncode == -9, (point, proc.returncode, proc.stderr)
        first = w.box.cli("reconcile")
        assert "rolled back" in first.stdout + first.stderr, first.stdout + first.stderr
        assert fingerprint6(w) == before
        w.ok(*argv)
        w.serve_in(k, "tcp", 80)
        got = w.ask_all([("outside", "tcp", HOST6, 8089), ("outside", "tcp", HOST_IP, 8089)])
        assert got == [f"{OUT6} 80", f"{OUT_IP} 80"]
    finally:  # the next point starts from a clean slate even if this one failed
        w.box.cli("network", "rm", "--force", "kds")


TOPOLOGY6 = """
name: t6
networks:
  tds: {subnet: 10.67.0.0/24, subnet6: "fd00:67::/64"}
  tv6: {subnet6: "fd00:68::/64", ipv6_mode: routed}
nodes:
  ta:
    connect: [{network: tds, ip6: "fd00:67::a"}, {network: tv6}]
    forward: true
  tb:
    connect: [{network: tds}]
  tc:
    connect: [{network: tv6}]
    routes: [{dst: "fd00:99::/64", via: "fd00:68::1"}]
links:
  - {a: ta, b: tc, a_ip: "fd00:6a::1/64", b_ip: "fd00:6a::2/64", emulation: {rate: 10mbit}}
"""


def test_topology_file_with_ipv6(w: World, tmp_path) -> None:
    """v6 subnets, static v6 addresses, v6 routes, a v6 router, a v6
    point-to-point link; up twice changes nothing the second time; graph
    shows the v6 addresses; down."""
    f = tmp_path / "t6.yaml"
    f.write_text(TOPOLOGY6)
    assert "change(s)" in w.ok("up", str(f))
    assert "nothing changed" in w.ok("up", str(f))
    assert "1 received" in w.ok("ping", "-c", "1", "tb", "fd00:67::a")
    assert "fd00:99::/64 via fd00:68::1" in inside(w, "tc", "ip", "-6", "route")
    link = w.ok("ping", "-c", "1", "ta", "fd00:6a::2")  # the point-to-point link, over v6
    assert "1 received" in link and "fe80" not in inside(w, "ta", "ip", "-6", "addr")
    assert inside(w, "ta", "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == "1"
    assert "0% dropped" in w.ok("check", "tds")
    dot = tmp_path / "t6.dot"
    w.ok("graph", str(f), "-o", str(dot))
    assert "fd00:67::a/64" in dot.read_text() and "fd00:68::1/64" in dot.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOPOLOGY6.replace('ip6: "fd00:67::a"', 'ip6: "fd00:70::a"'))
    proc = w.box.cli("up", str(bad))
    assert proc.returncode != 0 and "outside tds's IPv6 subnet" in proc.stderr
    w.ok("down", str(f))
    assert "tds" not in w.ok("network", "ls")

"""Docker parity on the wire, with real packets (issue #5).

The "outside world" is a namespace at 198.51.100.2 (documentation range)
joined to the sandbox host (198.51.100.1, plus 198.51.100.3 for HOST_IP
tests) by a veth; small servers answer with the address they saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from world import HOST_IP, HOST_IP2, OUT_IP, World


def _ip_of(world: World, net: str, ns: str) -> str:
    eps = json.loads(world.ok("network", "inspect", net))[0]["endpoints"]
    return next(e["address"].split("/")[0] for e in eps if e["netns"] == ns)


def test_outbound_masquerade_and_no_masquerade(world: World) -> None:
    box = world.box
    a, b = box.name("a"), box.name("b")
    proc = box.cli("network", "create", "nat", "--subnet", "10.10.0.0/24")
    assert proc.returncode == 0, proc.stderr
    assert "ip_forward=1" in proc.stderr  # said once, when nsnet turns it on
    world.ok("network", "create", "routed", "--subnet", "10.20.0.0/24", "--no-masquerade")
    world.ok("connect", "nat", a, "--create")
    world.ok("connect", "routed", b, "--create")
    assert world.ask(a, "tcp", OUT_IP, 7000) == f"{HOST_IP} 7000"
    assert world.ask(a, "udp", OUT_IP, 7000) == f"{HOST_IP} 7000"
    # without masquerade the outside sees the endpoint (and needs a route back)
    world.out("ip", "route", "add", "10.20.0.0/24", "via", HOST_IP)
    assert world.ask(b, "tcp", OUT_IP, 7000) == f"{_ip_of(world, 'routed', b)} 7000"
    # ... but may not open connections to it: only published ports come in
    assert world.ask("outside", "tcp", _ip_of(world, "routed", b), 7000) is None


def test_published_ports_tcp_udp_ranges_host_ip_localhost_hairpin(world: World) -> None:
    box = world.box
    web, peer = box.name("web"), box.name("peer")
    world.ok("network", "create", "front", "--subnet", "10.30.0.0/24")
    world.ok("connect", "front", web, "--create", "-p", "8080:80", "-p", "5353:53/udp",
             "-p", "9000-9001:81-82", "-p", f"{HOST_IP2}:8081:80")
    world.ok("connect", "front", peer, "--create")
    world.serve_in(web, "tcp", 80, 81, 82)
    world.serve_in(web, "udp", 53)
    assert world.ask("outside", "tcp", HOST_IP, 8080) == f"{OUT_IP} 80"  # source kept
    assert world.ask("outside", "udp", HOST_IP, 5353) == f"{OUT_IP} 53"
    assert world.ask("outside", "tcp", HOST_IP, 9000) == f"{OUT_IP} 81"
    assert world.ask("outside", "tcp", HOST_IP, 9001) == f"{OUT_IP} 82"
    assert world.ask("outside", "tcp", HOST_IP2, 8081) == f"{OUT_IP} 80"
    assert world.ask("outside", "tcp", HOST_IP, 8081) is None  # only on HOST_IP2
    gateway = "10.30.0.1"
    assert world.ask("host", "tcp", "127.0.0.1", 8080) == f"{gateway} 80"
    assert world.ask("host", "tcp", HOST_IP, 8080) is not None
    assert world.ask("host", "udp", "127.0.0.1", 5353) == f"{gateway} 53"
    # hairpin: the endpoint itself and a peer, through the host's address
    assert world.ask(web, "tcp", HOST_IP, 8080) == f"{gateway} 80"
    assert world.ask(peer, "tcp", HOST_IP, 8080) == f"{gateway} 80"
    listing = world.ok("port", "ls", "front")
    assert f"{HOST_IP2}:8081" in listing and "0.0.0.0:9001" in listing
    world.ok("port", "rm", "front", web, "8080:80")
    assert world.ask("outside", "tcp", HOST_IP, 8080) is None
    world.ok("port", "add", "front", web, "8080:80")
    assert world.ask("outside", "tcp", HOST_IP, 8080) == f"{OUT_IP} 80"


def test_internal_isolation_and_icc(world: World) -> None:
    box = world.box
    c, a, d, e1, e2 = (box.name(p) for p in ("c", "a", "d", "e1", "e2"))
    world.ok("network", "create", "int", "--subnet", "10.40.0.0/24", "--internal")
    world.ok("network", "create", "na", "--subnet", "10.41.0.0/24")
    world.ok("network", "create", "nb", "--subnet", "10.42.0.0/24")
    world.ok("network", "create", "quiet", "--subnet", "10.43.0.0/24", "--no-icc")
    world.ok("connect", "int", c, "--create")
    world.ok("connect", "na", a, "--create")
    world.ok("connect", "nb", d, "--create")
    world.ok("connect", "quiet", e1, e2, "--create")
    world.out("ip", "route", "add", "10.40.0.0/16", "via", HOST_IP)
    world.serve_in(c, "tcp", 80)
    world.serve_in(a, "tcp", 80)
    world.serve_in(d, "tcp", 80)
    world.serve_in(e2, "tcp", 80)
    blocked = [(c, "tcp", OUT_IP, 7000),  # internal -> outside
               ("outside", "tcp", "10.40.0.2", 80),  # outside -> internal
               (a, "tcp", "10.42.0.2", 80),  # A -> B
               (d, "tcp", "10.41.0.2", 80),  # B -> A
               (e1, "tcp", "10.43.0.3", 80)]  # no-icc peers
    answers = world.ask_all(blocked)
    assert [p for p, got in zip(blocked, answers, strict=True) if got is not None] == []
    assert world.ask("host", "tcp", "10.40.0.2", 80) == "10.40.0.1 80"  # gateway is fine
    assert world.ask(a, "tcp", OUT_IP, 7000) is not None  # A still goes out
    assert box.cli("ping", e1, "10.43.0.1", "-c", "1").returncode == 0  # but the gateway
    assert world.ask("host", "tcp", "10.43.0.3", 80) == "10.43.0.1 80"
    proc = box.cli("connect", "int", box.name("x"), "--create", "-p", "8080:80")
    assert proc.returncode == 2 and "internal" in proc.stderr


def test_flush_ruleset_then_reconcile_restores_everything(world: World) -> None:
    box = world.box
    web, other = box.name("web"), box.name("o")
    world.ok("network", "create", "front", "--subnet", "10.50.0.0/24")
    world.ok("network", "create", "back", "--subnet", "10.51.0.0/24", "--internal")
    world.ok("connect", "front", web, "--create", "-p", "8080:80")
    world.ok("connect", "back", other, "--create")
    world.serve_in(web, "tcp", 80)
    world.serve_in(other, "tcp", 80)
    before = world.ruleset()
    box.host("nft", "flush", "ruleset")
    assert world.ask("outside", "tcp", HOST_IP, 8080) is None
    assert world.ask(web, "tcp", "10.51.0.2", 80) is not None  # isolation gone
    dry = box.cli("reconcile", "--dry-run")
    assert dry.returncode == 1 and "firewall" in dry.stdout
    world.ok("reconcile")
    assert world.ruleset() == before
    assert world.ask("outside", "tcp", HOST_IP, 8080) == f"{OUT_IP} 80"
    assert world.ask(web, "tcp", OUT_IP, 7000) == f"{HOST_IP} 7000"
    assert world.ask(web, "tcp", "10.51.0.2", 80) is None
    assert box.cli("reconcile", "--dry-run").returncode == 0


def test_removal_leaves_the_ruleset_byte_identical(world: World) -> None:
    box = world.box
    empty = world.ruleset()
    world.ok("network", "create", "keep", "--subnet", "10.60.0.0/24", "--no-icc")
    world.ok("connect", "keep", box.name("k"), "--create", "-p", "7070:70")
    with_keep = world.ruleset()
    world.ok("network", "create", "tmp", "--subnet", "10.61.0.0/24", "--no-icc")
    world.ok("connect", "tmp", box.name("t1"), "--create", "-p", "8080:80",
             "-p", "8081-8085:81-85/udp")
    world.ok("connect", "tmp", box.name("t2"), "--create")
    world.ok("port", "add", "tmp", box.name("t2"), f"{HOST_IP2}:9090:90")
    assert world.ruleset() != with_keep
    world.ok("disconnect", "tmp", box.name("t1"))
    world.ok("network", "rm", "--force", "tmp")
    assert world.ruleset() == with_keep
    world.ok("network", "rm", "--force", "keep")
    assert world.ruleset() == empty


@pytest.mark.parametrize(("args", "needle"), [
    (["-p", "8080:80", "-p", "8080:81"], "published twice"),
    (["-p", "0.0.0.0:8080:80", "-p", f"{HOST_IP}:8080:80"], "published twice"),
    (["-p", "8000-8002:80-81"], "must match"),
    (["-p", "0:80"], "out of range"),
    (["-p", "70000:80"], "out of range"),
    (["-p", "80:80/sctp"], "unknown protocol"),
    (["-p", "203.0.113.9:80:80"], "not an address of the host"),
    (["-p", "7777:77"], "already published"),
])
def test_bad_publish_changes_nothing(world: World, args: list[str], needle: str) -> None:
    box = world.box
    world.ok("network", "create", "front", "--subnet", "10.70.0.0/24")
    world.ok("connect", "front", box.name("h"), "--create", "-p", "7777:77")
    before = (box.fingerprint(), world.ruleset())
    proc = box.cli("connect", "front", box.name("n"), "--create", *args)
    assert proc.returncode in (2, 4), proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert (box.fingerprint(), world.ruleset()) == before


def test_udp_mapping_change_flushes_stale_conntrack(world: World) -> None:
    box = world.box
    dns = box.name("dns")
    world.ok("network", "create", "front", "--subnet", "10.80.0.0/24")
    world.ok("connect", "front", dns, "--create")
    world.serve_in(dns, "udp", 53)
    # a client keeps its source port; its first datagram meets no mapping
    assert world.ask("outside", "udp", HOST_IP, 5300, src_port=40000) is None
    world.ok("port", "add", "front", dns, "5300:53/udp")
    deadline = time.monotonic() + 3
    answer = None
    while answer is None and time.monotonic() < deadline:
        answer = world.ask("outside", "udp", HOST_IP, 5300, src_port=40000)
    assert answer == f"{OUT_IP} 53"


# ------------------------------------------- README promises (issue #13)
def test_route_localnet_on_nsnet_bridges_only_and_127_dropped_there(world: World) -> None:
    """route_localnet=1 on routed nsnet bridges and nowhere else; whatever
    arrives on a bridge for 127.0.0.0/8 is dropped (nft guard + tc guard)."""
    from security.frames import UdpListener, ether_frame, ipv4_packet, link_mac, send_frame

    box = world.box
    a, c = box.name("a"), box.name("c")
    world.ok("network", "create", "routed", "--subnet", "10.65.0.0/24")
    world.ok("network", "create", "closed", "--subnet", "10.66.0.0/24", "--internal")
    world.ok("connect", "routed", a, "--create", "-p", "127.0.0.1:8080:80")
    world.ok("connect", "closed", c, "--create")
    nets = {n["name"]: n for n in json.loads(world.ok("network", "ls", "--json"))}
    routed, closed = nets["routed"]["bridge"], nets["closed"]["bridge"]

    def localnet(ifname: str) -> str:
        key = f"net.ipv4.conf.{ifname}.route_localnet"
        return box.host("sysctl", "-n", key).stdout.strip()

    assert localnet(routed) == "1"
    for other in (closed, "all", "default", "lo", box.name("up")):
        assert localnet(other) == "0", other
    for bridge in (routed, closed):
        assert "bpf" in box.host("tc", "filter", "show", "dev", bridge, "ingress").stdout
    a_path = os.path.join(box.netns_dir, a)
    frame = ether_frame(link_mac(a_path, "eth0"), link_mac(box.host_path, routed),
                        ipv4_packet("10.65.0.2", "127.0.0.1", "udp", 40000, 7777))
    with UdpListener(box.host_path, "127.0.0.1", 7777) as service:
        send_frame(a_path, "eth0", frame)
        assert service.collect(1.0) == []
    world.serve_in(a, "tcp", 80)
    assert world.ask("host", "tcp", "127.0.0.1", 8080) == "10.65.0.1 80"


_FOREIGN = """
table inet foreign {
    set blocked { type ipv4_addr; elements = { 203.0.113.9 } }
    chain input { type filter hook input priority 10; policy accept; ip saddr @blocked drop; }
    chain passing { type filter hook forward priority 5; policy accept; tcp dport 2222 accept; }
    chain extra { ip daddr 203.0.113.0/24 drop; }
}
table inet nsnet {
    chain mine { ip daddr 203.0.113.1 drop; }
}
table bridge other {
    chain c { type filter hook forward priority 0; policy accept; }
}
table ip nsnetx {
    map m { type ipv4_addr : verdict; }
}
"""


def test_never_touches_another_table(world: World) -> None:
    """Tables nsnet did not make -- including ones whose name or family is
    close to its own -- are byte-identical after every kind of change."""
    box = world.box
    subprocess.run(["nsenter", f"--net={box.host_path}", "nft", "-f", "-"], input=_FOREIGN,
                   text=True, check=True)

    def foreign() -> str:
        out = box.host("nft", "-s", "list", "ruleset").stdout
        return "\n".join(block.strip() for block in out.split("\ntable ")
                         if not block.removeprefix("table ").startswith(("ip nsnet {",
                                                                   "bridge nsnet {")))

    before = foreign()
    assert "inet nsnet" in before and "ip nsnetx" in before
    web, peer = box.name("web"), box.name("peer")
    steps = [("network", "create", "front", "--subnet", "10.67.0.0/24", "--no-icc"),
             ("network", "create", "back", "--subnet", "10.68.0.0/24", "--internal"),
             ("connect", "front", web, "--create", "-p", "8080:80"),
             ("connect", "back", peer, "--create"),
             ("port", "add", "front", web, "5353:53/udp"),
             ("port", "rm", "front", web, "8080:80"),
             ("disconnect", "back", peer)]
    for step in steps:
        world.ok(*step)
        assert foreign() == before, step
    box.host("nft", "delete", "table", "ip", "nsnet")  # drift: reconcile rebuilds ours only
    world.ok("reconcile")
    assert foreign() == before
    world.ok("network", "rm", "--force", "front")
    world.ok("network", "rm", "back")
    world.ok("reconcile")
    assert foreign() == before
    tables = box.host("nft", "list", "tables").stdout
    assert "table ip nsnet\n" not in tables + "\n" and "table bridge nsnet" not in tables
    assert "table inet nsnet" in tables


def test_nft_command_fallback_without_libnftables(world: World, monkeypatch) -> None:
    """With libnftables unavailable the driver pipes the same JSON to
    ``nft -j -f -``: a whole scenario works on the wire through it."""
    from nsnet import ConnectOptions, NetworkSpec, parse_ports
    from nsnet import kernel as k
    from nsnet.firewall import nft

    calls = {"lib": 0, "cli": 0}
    real_cli = nft.NftablesDriver._cli_run

    def no_library(text: str) -> tuple[int, str, str]:
        calls["lib"] += 1
        raise AssertionError("libnftables used although it is unavailable")

    def counted_cli(text: str) -> tuple[int, str, str]:
        calls["cli"] += 1
        return real_cli(text)

    monkeypatch.setattr(nft, "_lib", lambda: False)  # as if the library were not installed
    monkeypatch.setattr(nft.NftablesDriver, "_lib_run", staticmethod(no_library))
    monkeypatch.setattr(nft.NftablesDriver, "_cli_run", staticmethod(counted_cli))
    box = world.box
    host = k.open_netns(box.host_path)
    try:
        driver = nft.NftablesDriver(host)
        assert not driver.use_library
        eng = box.engine(firewall=driver)
        web = box.name("web")
        eng.network_create(NetworkSpec("front", "10.69.0.0/24", dns=False))
        eng.connect("front", [web], ConnectOptions(create=True, ports=parse_ports(["8080:80"])))
        world.serve_in(web, "tcp", 80)
        assert world.ask("outside", "tcp", HOST_IP, 8080) == f"{OUT_IP} 80"
        box.host("nft", "flush", "ruleset")
        assert world.ask("outside", "tcp", HOST_IP, 8080) is None
        assert eng.firewall_drift()
        eng.reconcile()
        assert eng.firewall_drift() == 0
        assert world.ask("outside", "tcp", HOST_IP, 8080) == f"{OUT_IP} 80"
        eng.network_rm("front", force=True)
        assert "nsnet" not in box.host("nft", "list", "tables").stdout
    finally:
        host.close()
    assert calls["cli"] >= 5 and calls["lib"] == 0

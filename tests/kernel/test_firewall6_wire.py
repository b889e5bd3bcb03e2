"""The IPv6 firewall rules against real traffic (#16), built by hand with
the kernel layer in the sandbox host namespace (the engine wiring comes
later): each promise is attacked from outside, and the legitimate path is
shown to work in the same setup.

  outside 2001:db8::53 --veth-- host 2001:db8::1 (forwarding on, nsnet's ruleset)
    bridge A (NAT, dual-stack)  fd00:a::/64 + 10.10.0.0/24   a1 ::2, -p 8080:80
    bridge B (NAT, IPv6-only)   fd00:b::/64                  b1 ::2
    bridge R (routed)           fd00:c::/64                  r1 ::2, -p 8081:81
    bridge I (internal, v6)     fd00:d::/64                  i1 ::2
The outside has routes to every fd00::/16 network via the host, as a LAN
neighbour trying direct routing would."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest

from nsnet import kernel as k
from nsnet import parse_ports
from nsnet.firewall import rules as fw
from nsnet.firewall.nft import NftablesDriver
from nsnet.model import Endpoint, Network, Published

V6_OFF = {"net/ipv6/conf/default/disable_ipv6": "1"}
OUT, HOST = "2001:db8::53", "2001:db8::1"


class Listener:
    """A TCP server on [::]:port inside a namespace (a thread of this test
    process; the socket lives in the namespace): says the peer's address."""

    def __init__(self, ns: k.Netns, port: int) -> None:
        with k.entered(ns.fd):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", port))
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(peer[0].encode())

    def close(self) -> None:
        self.sock.close()


def connect(ns: k.Netns, ip: str, port: int, timeout: float = 1.0,
            src: str | None = None) -> str | None:
    """What the listener at ip:port says (the source it saw), None if the
    connection is dropped or refused."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with k.entered(ns.fd):
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if src:
            sock.bind((src, 0))
        sock.connect((ip, port))
        return sock.recv(100).decode()
    except OSError:
        return None
    finally:
        sock.close()


def _ready(rt: k.Rtnl, bridges: list[str], addresses: list[tuple[k.Netns, str]]) -> None:
    """Wait out the kernel's asynchronous steps (see test_ipv6_kernel.py):
    bridge ports forwarding, and each address's solicited-node group
    joined, so that a dropped connection below means the firewall."""
    deadline = time.monotonic() + 5
    masters = {rt.link(b).index for b in bridges}
    while any(lk.port_state != 3 for lk in rt.links() if lk.master in masters):
        assert time.monotonic() < deadline, "bridge ports never forwarded"
        time.sleep(0.01)
    for ns, address in addresses:
        group = "ff0200000000000000000001ff" + ipaddress.IPv6Address(
            address).exploded.replace(":", "")[-6:]
        while True:
            with k.entered(ns.fd), open("/proc/thread-self/net/igmp6") as f:
                if group in f.read():
                    break
            assert time.monotonic() < deadline, f"{address} never joined its group"
            time.sleep(0.005)


def _net(tag: str, bridge: str, v4: bool = False, **kw) -> Network:
    return Network(tag * 32, f"net{tag}", bridge, "10.10.0.0/24" if v4 else "",
                   "10.10.0.1" if v4 else "", "10.10.0.0/24" if v4 else "", 1500, 1.0,
                   subnet6=f"fd00:{tag}::/64", gateway6=f"fd00:{tag}::1",
                   ip_range6=f"fd00:{tag}::/64", **kw)


@pytest.fixture
def wire(sandbox):
    host = k.open_netns(sandbox.host_path)
    rt = k.open_rtnl(host)
    sid = sandbox.id
    made, links, listeners = [], [], []
    nets = {"a": _net("a", f"ba{sid}", v4=True), "b": _net("b", f"bb{sid}"),
            "c": _net("c", f"bc{sid}", ipv6_mode="routed"),
            "d": _net("d", f"bi{sid}", internal=True)}
    eps: dict[str, k.Netns] = {}

    def netns(name: str) -> k.Netns:
        ns = k.create_netns(sandbox.netns_dir, f"{name}{sid}", V6_OFF)
        made.append(ns)
        return ns

    def inside(ns: k.Netns, addrs: list[str], gw6: str, gw4: str | None = None) -> None:
        k.write_sysctls(ns, k.ipv6_interface_sysctls("eth0"))
        with k.open_rtnl(ns) as nrt:
            index = nrt.link("eth0").index
            reqs = [k.req_set_link("lo", up=True), k.req_set_link(index=index, up=True)]
            reqs += [k.req_add_addr(index, a, nodad=":" in a) for a in addrs]
            reqs.append(k.req_add_route6("default", gw6, oif=index))
            if gw4:
                reqs.append(k.req_add_route("default", gw4, oif=index))
            nrt.run(reqs)

    for tag, net in nets.items():
        rt.run([k.req_new_bridge(net.bridge, up=False)])
        links.append(net.bridge)
        k.write_sysctls(host, k.ipv6_gateway_sysctls(net.bridge))
        index = rt.link(net.bridge).index
        addrs = [f"{net.gateway6}/64"] + (["10.10.0.1/24"] if net.has_ipv4 else [])
        rt.run([k.req_set_link(index=index, up=True)]
               + [k.req_add_addr(index, a, nodad=":" in a) for a in addrs])
        ns = eps[tag] = netns(f"{tag}1")
        rt.run([k.req_new_veth(k.VethSpec(f"v{tag}{sid}", "eth0", ns.fd, master=index)),
                k.req_set_link(f"v{tag}{sid}", up=True)])
        k.write_sysctls(host, k.ipv6_off_sysctls(f"v{tag}{sid}"))
        inside(ns, [f"fd00:{tag}::2/64"] + (["10.10.0.2/24"] if net.has_ipv4 else []),
               net.gateway6, "10.10.0.1" if net.has_ipv4 else None)
    out = netns("out")
    rt.run([k.req_new_veth(k.VethSpec(f"vo{sid}", "eth0", out.fd)),
            k.req_set_link(f"vo{sid}", up=True)])
    links.append(f"vo{sid}")
    k.write_sysctls(host, {**k.ipv6_interface_sysctls(f"vo{sid}"), k.FORWARDING6: "1"})
    rt.run([k.req_add_addr(rt.link(f"vo{sid}").index, f"{HOST}/64", nodad=True)])
    inside(out, [f"{OUT}/64"], HOST)
    with k.open_rtnl(out) as ort:  # a LAN neighbour routing the containers' prefix here
        ort.run([k.req_add_route6("fd00::/16", HOST, oif=ort.link("eth0").index)])

    def endpoint(tag: str) -> Endpoint:
        net = nets[tag]
        return Endpoint(tag * 8, net.name, eps[tag].name, "eth0", f"v{tag}{sid}",
                        "10.10.0.2/24" if net.has_ipv4 else "", "02:00:00:00:00:01",
                        net.gateway, True, 1.0, address6=f"fd00:{tag}::2/64",
                        gateway6=net.gateway6)

    full = [Network(**{**n.__dict__, "endpoints": (endpoint(t),)}) for t, n in nets.items()]
    pubs = [Published(ep.id, n.name, ep.netns, ep.ip, m, ep.ip6, n.ipv6_mode == "routed")
            for n, spec in ((full[0], "8080:80"), (full[2], "8081:81"))
            for ep in n.endpoints for m in parse_ports([spec], ipv6=True)]
    _ready(rt, [n.bridge for n in nets.values()],
           [(eps[t], f"fd00:{t}::2") for t in nets] + [(out, OUT)])
    driver = NftablesDriver(host)
    driver.apply(fw.full(full, pubs))
    for tag, port in (("a", 80), ("b", 80), ("c", 81), ("c", 82), ("d", 80)):
        listeners.append(Listener(eps[tag], port))
    listeners.append(Listener(out, 9000))
    try:
        yield eps, out
    finally:
        for lst in listeners:
            lst.close()
        driver.apply(fw.teardown() + fw.teardown6())
        rt.run([k.req_del_link(name=n) for n in links])
        rt.close()
        for ns in made:
            ns.close()
            k.remove_netns(ns.path)
        host.close()


def test_published_port_serves_ipv6_and_unsolicited_inbound_is_dropped(wire):
    _eps, out = wire
    assert connect(out, HOST, 8080) == OUT  # -p 8080:80 over IPv6 (DNAT, no SNAT)
    assert connect(out, "fd00:a::2", 80) is None  # direct, unpublished: dropped
    assert connect(out, "fd00:b::2", 80) is None


def test_nat_mode_masquerades_routed_mode_keeps_the_address(wire):
    eps, _out = wire
    assert connect(eps["a"], OUT, 9000) == HOST  # masqueraded
    assert connect(eps["b"], OUT, 9000) == HOST
    assert connect(eps["c"], OUT, 9000) == "fd00:c::2"  # routed: its own address


def test_routed_mode_opens_only_published_container_ports(wire):
    _eps, out = wire
    assert connect(out, "fd00:c::2", 81) == OUT  # published container port, directly
    assert connect(out, "fd00:c::2", 82) is None  # not published: dropped
    assert connect(out, HOST, 8081) is None  # the host port is not used in routed mode
    echoes = list(k.ping(out.fd, "fd00:c::2", count=1, interval=0.2, timeout=1.0))
    assert echoes[0].rtt_ms is not None  # ICMPv6 echo allowed, as Docker
    direct = list(k.ping(out.fd, "fd00:a::2", count=1, interval=0.2, timeout=0.5))
    assert direct[0].rtt_ms is None  # NAT mode: no direct echo


def test_networks_are_isolated_over_ipv6(wire):
    eps, _out = wire
    assert connect(eps["b"], "fd00:a::2", 80) is None
    assert connect(eps["a"], "fd00:b::2", 80) is None
    assert connect(eps["a"], "fd00:c::2", 82) is None  # routed, unpublished
    assert connect(eps["a"], "fd00:c::2", 81) is not None  # routed + published: reachable
    assert connect(eps["b"], HOST, 8080) is not None  # published ports via host addresses


def test_internal_network_is_sealed_but_reaches_its_gateway(wire):
    eps, out = wire
    assert connect(eps["d"], OUT, 9000) is None
    assert connect(out, "fd00:d::2", 80) is None
    assert connect(eps["a"], "fd00:d::2", 80) is None
    echoes = list(k.ping(eps["d"].fd, "fd00:d::1", count=1, interval=0.2, timeout=1.0))
    assert echoes[0].rtt_ms is not None  # neighbour discovery + echo to the gateway


def test_spoofed_source_is_dropped(wire):
    """An endpoint that gives itself an address outside its network's
    subnet (IPv6 has no rp_filter) gets nothing forwarded."""
    eps, _out = wire
    with k.open_rtnl(eps["b"]) as rt:
        rt.run([k.req_add_addr(rt.link("eth0").index, "fd00:a::99/128", nodad=True)])
    assert connect(eps["b"], OUT, 9000, src="fd00:a::99") is None  # another network's prefix
    assert connect(eps["b"], "fd00:c::2", 81, src="fd00:a::99") is None
    assert connect(eps["b"], OUT, 9000, src="fd00:b::2") == HOST  # its own address works

"""The embedded DNS server over IPv6 (#16), asked by dig: a dual-stack
network and an IPv6-only one, set up with the kernel layer's IPv6
requests inside the sandbox host namespace, their names in a state store,
and the real server process started by DnsControl.  Upstream forwarding
goes over IPv6 to a fake upstream in an "outside" namespace
(2001:db8::53, documentation range)."""

from __future__ import annotations

import os

import pytest

from dnstools import dig, log_lines, start_upstream
from nsnet import kernel as k
from nsnet.dns import DnsControl
from nsnet.model import Endpoint, Network
from nsnet.state import Store

V6_OFF_BY_DEFAULT = {"net/ipv6/conf/default/disable_ipv6": "1"}


def _inside(ns: k.Netns, addrs: list[str], gw4: str | None, gw6: str) -> None:
    k.write_sysctls(ns, k.ipv6_interface_sysctls("eth0"))
    with k.open_rtnl(ns) as rt:
        index = rt.link("eth0").index
        reqs = [k.req_set_link("lo", up=True), k.req_set_link(index=index, up=True)]
        reqs += [k.req_add_addr(index, a, nodad=":" in a) for a in addrs]
        if gw4:
            reqs.append(k.req_add_route("default", gw4, oif=index))
        reqs.append(k.req_add_route6("default", gw6, oif=index))
        rt.run(reqs)


@pytest.fixture
def world(sandbox):
    host = k.open_netns(sandbox.host_path)
    rt = k.open_rtnl(host)
    made: list[k.Netns] = []
    links: list[str] = []
    upstream = None

    def netns(name: str) -> k.Netns:
        ns = k.create_netns(sandbox.netns_dir, name, V6_OFF_BY_DEFAULT)
        made.append(ns)
        return ns

    def bridge(name: str, addrs: list[str]) -> int:
        rt.run([k.req_new_bridge(name, up=False)])
        links.append(name)
        k.write_sysctls(host, k.ipv6_gateway_sysctls(name))
        index = rt.link(name).index
        rt.run([k.req_set_link(index=index, up=True)]
               + [k.req_add_addr(index, a, nodad=":" in a) for a in addrs])
        return index

    def plug(bridge_index: int, ns: k.Netns, host_end: str, master: bool = True) -> None:
        rt.run([k.req_new_veth(k.VethSpec(host_end, "eth0", ns.fd,
                                          master=bridge_index if master else 0)),
                k.req_set_link(host_end, up=True)])
        links.append(host_end)
        k.write_sysctls(host, k.ipv6_off_sysctls(host_end) if master
                        else k.ipv6_interface_sysctls(host_end))

    sid = sandbox.id
    web, db, out = netns(f"web{sid}"), netns(f"db{sid}"), netns(f"out{sid}")
    dual = bridge(f"bd{sid}", ["10.9.0.1/24", "fd00:9::1/64"])
    six = bridge(f"bs{sid}", ["fd00:6::1/64"])
    plug(dual, web, f"vw{sid}")
    plug(six, db, f"vd{sid}")
    plug(0, out, f"vo{sid}", master=False)
    k.write_sysctls(host, {k.FORWARDING6: "1"})
    rt.run([k.req_add_addr(rt.link(f"vo{sid}").index, "2001:db8::1/64", nodad=True)])
    _inside(web, ["10.9.0.2/24", "fd00:9::2/64"], "10.9.0.1", "fd00:9::1")
    _inside(db, ["fd00:6::2/64"], None, "fd00:6::1")
    _inside(out, ["2001:db8::53/64"], None, "2001:db8::1")
    store = Store(sandbox.state_dir)
    with store.transaction():
        store.add_network(Network("d" * 32, "dual", f"bd{sid}", "10.9.0.0/24", "10.9.0.1",
                                  "10.9.0.0/24", 1500, 1.0, subnet6="fd00:9::/64",
                                  gateway6="fd00:9::1", ip_range6="fd00:9::/64"))
        store.add_network(Network("s" * 32, "six", f"bs{sid}", "", "", "", 1500, 1.0,
                                  subnet6="fd00:6::/64", gateway6="fd00:6::1",
                                  ip_range6="fd00:6::/64"))
        store.add_endpoints("d" * 32, [Endpoint("e1", "dual", web.name, "eth0", f"vw{sid}",
                                                "10.9.0.2/24", "02:00:00:00:00:01", "", True,
                                                1.0, ("www",), address6="fd00:9::2/64")])
        store.add_endpoints("s" * 32, [Endpoint("e2", "six", db.name, "eth0", f"vd{sid}", "",
                                                "02:00:00:00:00:02", "", True, 1.0,
                                                address6="fd00:6::2/64")])
    os.makedirs(os.path.join(sandbox.etc_dir, "host"))
    with open(os.path.join(sandbox.etc_dir, "host", "resolv.conf"), "w") as f:
        f.write("nameserver 2001:db8::53\n")  # the host's only upstream speaks IPv6
    upstream = start_upstream(out.path, "2001:db8::53", str(sandbox.base / "upstream.log"))
    control = DnsControl(sandbox.state_dir, host, sandbox.host_path, sandbox.etc_dir)
    try:
        errors = control.sync({"dual", "six"})
        assert errors == {}, errors
        status = control.status()["networks"]
        assert status["dual"]["gateways"] == ["10.9.0.1", "fd00:9::1"]
        assert status["dual"]["listening"] and status["six"]["listening"]
        yield web, db, out
    finally:
        control.stop()
        upstream.kill()
        upstream.wait()
        store.close()
        rt.run([k.req_del_link(name=n) for n in links if n.startswith(("bd", "bs", "vo"))])
        rt.close()
        for ns in made:
            ns.close()
            k.remove_netns(ns.path)
        host.close()


def _answers(msg: dict) -> list[tuple[str, str]]:
    return sorted((rr[3], rr[4]) for rr in msg["ANSWER"])


def test_aaaa_ptr_and_forwarding_over_ipv6(world):
    web, db, _out = world
    got = dig(web.path, "@fd00:9::1", f"{web.name}", "AAAA")
    assert got["status"] == "NOERROR" and _answers(got) == [("AAAA", "fd00:9::2")]
    assert _answers(dig(web.path, "@fd00:9::1", "www", "AAAA")) == [("AAAA", "fd00:9::2")]
    assert _answers(dig(web.path, "@10.9.0.1", "www", "AAAA")) == [("AAAA", "fd00:9::2")]
    assert _answers(dig(web.path, "@fd00:9::1", "www", "A")) == [("A", "10.9.0.2")]
    assert _answers(dig(web.path, "+tcp", "@fd00:9::1", "www", "AAAA")) == [
        ("AAAA", "fd00:9::2")]
    ptr = dig(web.path, "@fd00:9::1", "-x", "fd00:9::2")
    assert _answers(ptr) == [("PTR", f"{web.name}.")]
    assert dig(web.path, "@fd00:9::1", "-x", "fd00:9::77")["status"] == "NXDOMAIN"
    # forwarded upstream over IPv6
    fwd = dig(web.path, "@fd00:9::1", "name.test", "A")
    assert _answers(fwd) == [("A", "203.0.113.7")]
    # the IPv6-only network: its own names, on its IPv6 gateway
    assert _answers(dig(db.path, "@fd00:6::1", db.name, "AAAA")) == [("AAAA", "fd00:6::2")]
    assert dig(db.path, "@fd00:6::1", db.name, "A")["counts"].get("ANSWER") == 0
    assert dig(db.path, "@fd00:6::1", "www", "AAAA")["status"] == "NXDOMAIN"
    assert _answers(dig(db.path, "@fd00:6::1", "other.test", "A")) == [("A", "203.0.113.7")]


def test_another_networks_client_is_refused(world, sandbox):
    """The IPv6-only network's endpoint reaches the dual-stack gateway's
    address (the host routes to it), but the dual-stack zone is not its
    zone: REFUSED, nothing forwarded."""
    _web, db, _out = world
    assert dig(db.path, "@fd00:9::1", "www", "AAAA")["status"] == "REFUSED"
    assert dig(db.path, "@fd00:9::1", "leak.test", "A")["status"] == "REFUSED"
    assert not [q for q in log_lines(str(sandbox.base / "upstream.log")) if "leak" in q]
    assert _answers(dig(db.path, "@fd00:6::1", "fine.test", "A")) == [("A", "203.0.113.7")]
    assert "udp fine.test" in log_lines(str(sandbox.base / "upstream.log"))  # the log works

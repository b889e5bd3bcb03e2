"""Engine behaviour against a real kernel, host = sandbox namespace."""

import os
import subprocess
import time

import pytest

from nsnet import (
    AlreadyExists,
    Conflict,
    ConnectOptions,
    NetworkSpec,
    NotFound,
    PoolExhausted,
)


def _net(eng, name="front", subnet="198.51.100.0/24", **kw):
    return eng.network_create(NetworkSpec(name, subnet, **kw))


def test_network_create_makes_an_owned_bridge(sandbox):
    eng = sandbox.engine()
    net = _net(eng)
    assert net.gateway == "198.51.100.1" and net.bridge == f"br-{net.id[:12]}"
    snap = eng.snapshot()
    br = snap.link(net.bridge)
    assert br.kind == "bridge" and br.up and br.alias == f"nsnet:net:{net.id}"
    assert [a.cidr for a in snap.addresses_of(net.bridge)] == ["198.51.100.1/24"]


def test_connect_many_and_reach_each_other(sandbox):
    eng = sandbox.engine()
    net = _net(eng)
    names = [sandbox.name(f"n{i}-") for i in range(5)]
    eps = eng.connect("front", names, ConnectOptions(create=True))
    assert [e.ip for e in eps] == [f"198.51.100.{i}" for i in range(2, 7)]
    for ep in eps:
        snap = eng.snapshot(ep.netns)
        eth0 = snap.link("eth0")
        assert eth0.up and snap.link("lo").up
        assert [a.cidr for a in snap.addresses_of("eth0")] == [ep.address]
        assert any(r.is_default and r.gateway == "198.51.100.1" for r in snap.routes)
        host_end = eng.snapshot().link(ep.host_ifname)
        assert host_end.up and host_end.alias == f"nsnet:ep:{ep.id}" \
            and host_end.group == net.link_group != 0  # the network's own (#15)
    (result,) = eng.check("front")
    assert result.ok and len(result.reach) == 20


@pytest.mark.parametrize("how", ["created by connect", "made by ns add", "foreign"])
def test_ipv6_is_off_on_endpoint_interfaces(sandbox, how):
    eng = sandbox.engine()
    _net(eng)
    ns = sandbox.name("v6")
    if how == "made by ns add":
        eng.ns_add([ns])
    elif how == "foreign":
        sandbox.foreign_netns(ns)
    # every IPv6 address or route event in the host while connecting: a host
    # end that had IPv6 for a moment (up with a carrier before its IPv6 was
    # off) shows here even though disabling IPv6 flushes what it got
    monitor = subprocess.Popen(["nsenter", f"--net={sandbox.host_path}", "ip", "-6", "monitor",
                                "address", "route"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)  # listening before the first event
        (ep,) = eng.connect("front", [ns], ConnectOptions(create=how == "created by connect"))
        time.sleep(0.2)
    finally:
        monitor.terminate()
    events = monitor.communicate(timeout=5)[0]
    assert ep.host_ifname not in events, events
    inside = sandbox.inside(ep.netns, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
    assert inside.stdout.strip() == "1"
    addrs = sandbox.inside(ep.netns, "ip", "-6", "addr", "show", "dev", "eth0").stdout
    assert "inet6" not in addrs
    bridge = eng.network("front").bridge
    assert sandbox.host("cat", f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").stdout == "1\n"
    # the host end too: a bridge port needs no IPv6, and with it on every
    # link change walks a host IPv6 FIB that grows with the endpoints
    assert sandbox.host("cat", f"/proc/sys/net/ipv6/conf/{ep.host_ifname}/disable_ipv6"
                        ).stdout == "1\n"
    assert "inet6" not in sandbox.host("ip", "-6", "addr", "show", "dev", ep.host_ifname).stdout
    # (born up where connect made the namespace: one link notification
    # fewer; the monitor above shows no IPv6 ever reached it) and none now
    assert sandbox.host("ip", "-6", "route", "show", "table", "all", "dev",
                        ep.host_ifname).stdout.strip() == ""


def test_each_connect_numbers_its_namespaces_below_the_ones_before(sandbox):
    """The host's ids of connected namespaces go down (the kernel's walk of
    them, at each link notification of a veth end, finds the newest first:
    req_new_nsid); a namespace on a second network keeps its id."""
    import re

    eng = sandbox.engine()
    _net(eng)
    first = [sandbox.name("o1"), sandbox.name("o2")]
    eng.connect("front", first, ConnectOptions(create=True))
    (later,) = eng.connect("front", [sandbox.name("o3")], ConnectOptions(create=True))
    _net(eng, "back", "203.0.113.0/24")
    (again,) = eng.connect("back", [first[0]])

    def nsid(ep):
        shown = sandbox.host("ip", "-d", "link", "show", "dev", ep.host_ifname).stdout
        return int(re.search(r"link-netnsid (\d+)", shown).group(1))
    ids = [nsid(e) for e in eng.network("front").endpoints]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3 and ids[-1] == nsid(later)
    assert ids[0] >= 1 << 29  # nsnet's range, far above the kernel's own numbering
    assert nsid(again) == ids[0]


def test_static_options(sandbox):
    eng = sandbox.engine()
    _net(eng)
    ns = sandbox.name("st")
    (ep,) = eng.connect("front", [ns], ConnectOptions(
        ip="198.51.100.77", mac="02:42:00:00:00:07", ifname="lan0", host_ifname="vst0",
        create=True))
    snap = eng.snapshot(ns)
    assert snap.link("lan0").mac == "02:42:00:00:00:07"
    assert ep.address == "198.51.100.77/24" and ep.host_ifname == "vst0"


def test_second_network_gets_eth1_and_no_second_default(sandbox):
    eng = sandbox.engine()
    _net(eng)
    _net(eng, "back", "203.0.113.0/24")
    ns = sandbox.name("mh")
    eng.connect("front", [ns], ConnectOptions(create=True))
    (ep2,) = eng.connect("back", [ns])
    assert ep2.ifname == "eth1" and not ep2.default_route
    defaults = [r for r in eng.snapshot(ns).routes if r.is_default]
    assert [r.gateway for r in defaults] == ["198.51.100.1"]
    eng.disconnect("front", [ns])  # like Docker: the gateway moves to the remaining network
    defaults = [r for r in eng.snapshot(ns).routes if r.is_default]
    assert [r.gateway for r in defaults] == ["203.0.113.1"]
    assert eng.snapshot(ns).link("eth0") is None
    assert [e.default_route for e in eng.network("back").endpoints] == [True]


def test_disconnect_removes_both_ends_and_releases_address(sandbox):
    eng = sandbox.engine()
    _net(eng)
    names = [sandbox.name(f"d{i}-") for i in range(3)]
    eps = eng.connect("front", names, ConnectOptions(create=True))
    eng.disconnect("front", names[:2])
    host = {lk.name for lk in eng.snapshot().links}
    assert eps[0].host_ifname not in host and eps[1].host_ifname not in host
    assert eps[2].host_ifname in host
    assert eng.snapshot(names[0]).link("eth0") is None
    (again,) = eng.connect("front", [names[0]])
    assert again.ip == eps[0].ip  # lowest free address, reused


def test_foreign_namespace_is_used_but_never_deleted(sandbox):
    eng = sandbox.engine()
    _net(eng)
    foreign = sandbox.foreign_netns(sandbox.name("fo"))
    eng.connect("front", [foreign])
    assert not next(n for n in eng.ns_list() if n.name == foreign).owned
    with pytest.raises(Conflict, match="was not created by nsnet"):
        eng.ns_rm([foreign])
    eng.network_rm("front", force=True)
    assert os.path.exists(os.path.join(sandbox.netns_dir, foreign))
    assert eng.snapshot(foreign).link("eth0") is None


def test_ns_rm_takes_its_veths(sandbox):
    eng = sandbox.engine()
    _net(eng)
    names = [sandbox.name(f"r{i}-") for i in range(3)]
    eps = eng.connect("front", names, ConnectOptions(create=True))
    eng.ns_rm(names)
    host = {lk.name for lk in eng.snapshot().links}
    assert not host & {e.host_ifname for e in eps}
    assert eng.network("front").endpoints == ()
    assert not set(names) & set(os.listdir(sandbox.netns_dir))


def test_network_rm_needs_force_with_endpoints(sandbox):
    eng = sandbox.engine()
    net = _net(eng)
    eng.connect("front", [sandbox.name("f")], ConnectOptions(create=True))
    with pytest.raises(Conflict, match="has 1 endpoint"):
        eng.network_rm("front")
    eng.network_rm("front", force=True)
    assert eng.snapshot().link(net.bridge) is None
    assert eng.networks() == []


def test_prune_removes_only_empty_networks(sandbox):
    eng = sandbox.engine()
    _net(eng)
    _net(eng, "empty", "203.0.113.0/24")
    eng.connect("front", [sandbox.name("p")], ConnectOptions(create=True))
    assert eng.network_prune() == ["empty"]
    assert [n.name for n in eng.networks()] == ["front"]


def test_conflicts(sandbox):
    eng = sandbox.engine()
    _net(eng, subnet="198.51.100.0/30")
    ns = sandbox.name("c")
    eng.connect("front", [ns], ConnectOptions(create=True))
    with pytest.raises(AlreadyExists, match="already connected"):
        eng.connect("front", [ns])
    with pytest.raises(PoolExhausted, match="exhausted"):
        eng.connect("front", [sandbox.name("c2")], ConnectOptions(create=True))
    with pytest.raises(NotFound, match="does not exist"):
        eng.connect("front", [sandbox.name("missing")])
    with pytest.raises(Conflict, match="overlaps network 'front'"):
        _net(eng, "other", "198.51.100.0/24")
    assert sorted(os.listdir(sandbox.netns_dir)) == [ns]


def test_bridge_port_limit_is_refused_up_front(sandbox, monkeypatch):
    import nsnet.engine.endpoints

    monkeypatch.setattr(nsnet.engine.endpoints, "MAX_BRIDGE_PORTS", 3)
    eng = sandbox.engine()
    _net(eng)
    names = [sandbox.name(f"b{i}-") for i in range(4)]
    with pytest.raises(PoolExhausted, match="a Linux bridge holds at most 3"):
        eng.connect("front", names, ConnectOptions(create=True))
    assert os.listdir(sandbox.netns_dir) == []


def test_kernel_failure_midway_is_undone(sandbox, monkeypatch):
    """The kernel refuses the third endpoint's inside configuration: the two
    finished endpoints, all veths and the namespaces made are undone."""
    import errno

    import nsnet.engine.endpoints
    from nsnet import KernelError

    eng = sandbox.engine()
    _net(eng)
    names = [sandbox.name(f"u{i}-") for i in range(3)]
    foreign = sandbox.foreign_netns(sandbox.name("uf"))
    before = sandbox.fingerprint()
    real = nsnet.engine.endpoints.configure_inside
    calls = []

    def failing(ns, ep, **kw):
        calls.append(ep.netns)
        if len(calls) == 3:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real(ns, ep, **kw)

    monkeypatch.setattr(nsnet.engine.endpoints, "configure_inside", failing)
    with pytest.raises(KernelError, match=r"configuring eth0 in namespace .*busy"):
        eng.connect("front", [*names, foreign], ConnectOptions(create=True))
    assert sandbox.fingerprint() == before
    assert eng.snapshot(foreign).link("eth0") is None


def test_generated_host_end_names_avoid_taken_ones(sandbox, monkeypatch):
    """A generated host end name ("veth" + 7 hex digits of a random id) that
    a host link has (someone's: Docker names its ends alike), that a recorded
    endpoint has, or that the batch repeats is drawn again: at 5000 endpoints
    two random names meet about once in 20 worlds, and such a connect failed
    with "File exists" (bench.scale hit it)."""
    import nsnet.engine.endpoints

    eng = sandbox.engine()
    _net(eng)
    (first,) = eng.connect("front", [sandbox.name("g0-")], ConnectOptions(create=True))
    sandbox.host("ip", "link", "add", "vethbeef000", "type", "bridge")  # not nsnet's
    # the recorded endpoint's end is gone (reconcile would make it again by
    # its recorded name): only the state knows the name is taken
    sandbox.host("ip", "link", "del", first.host_ifname)
    prefixes = iter(["beef000", first.id[:7], "cafe000", "cafe000", "cafe001", "cafe002"])
    ids = (f"{p}{i}-0000-4000-8000-{i:012d}" for i, p in enumerate(prefixes))
    monkeypatch.setattr(nsnet.engine.endpoints, "new_id", lambda: next(ids))
    names = [sandbox.name(f"g{i}-") for i in (1, 2, 3)]
    eps = eng.connect("front", names, ConnectOptions(create=True))
    assert [e.host_ifname for e in eps] == ["vethcafe000", "vethcafe001", "vethcafe002"]
    snap = eng.snapshot()
    assert snap.link("vethbeef000").kind == "bridge" and not snap.link("vethbeef000").alias
    for e in eps:
        assert snap.link(e.host_ifname).alias == f"nsnet:ep:{e.id}"
    sandbox.host("ip", "link", "del", "vethbeef000")


def test_rollback_leaves_a_foreign_veth_that_took_a_planned_name(sandbox, monkeypatch):
    """Someone makes an unmarked veth (as Docker's ends are) with a name the
    plan chose, between the plan's lookup and nsnet's create: the create
    fails with "File exists", and the rollback deletes nsnet's own unmarked
    ends (born in the network's link group) but not that one."""
    import nsnet.engine.endpoints
    from nsnet import KernelError

    eng = sandbox.engine()
    _net(eng)
    sandbox.host("ip", "link", "add", "vethbeef000", "type", "veth", "peer", "name", "vbeefpeer")
    ids = (f"{p}{i}-0000-4000-8000-{i:012d}" for i, p in enumerate(["cafe000", "beef000"]))
    monkeypatch.setattr(nsnet.engine.endpoints, "new_id", lambda: next(ids))
    monkeypatch.setattr(nsnet.engine.endpoints.Endpoints, "host_names_taken",
                        lambda self, names: set())  # the race: the lookup saw nothing
    names = [sandbox.name(f"r{i}-") for i in (1, 2)]
    with pytest.raises(KernelError, match="vethbeef000 <-> eth0: File exists"):
        eng.connect("front", names, ConnectOptions(create=True))
    snap = eng.snapshot()
    assert snap.link("vethbeef000").kind == "veth" and snap.link("vbeefpeer")
    assert snap.link("vethcafe000") is None  # nsnet's own end, made and undone
    assert os.listdir(sandbox.netns_dir) == []
    sandbox.host("ip", "link", "del", "vethbeef000")


def test_interface_name_taken_inside_is_refused(sandbox):
    eng = sandbox.engine()
    _net(eng)
    foreign = sandbox.foreign_netns(sandbox.name("it"))
    sandbox.inside(foreign, "ip", "link", "add", "lan0", "type", "bridge")
    with pytest.raises(AlreadyExists, match="already has an interface 'lan0'"):
        eng.connect("front", [foreign], ConnectOptions(ifname="lan0"))
    (ep,) = eng.connect("front", [foreign])
    assert ep.ifname == "eth0"


def test_ns_add_ls_rm(sandbox):
    eng = sandbox.engine()
    a, b = sandbox.name("a"), sandbox.name("b")
    eng.ns_add([a, b])
    assert {n.name: n.owned for n in eng.ns_list()} == {a: True, b: True}
    with pytest.raises(AlreadyExists):
        eng.ns_add([a])
    eng.ns_rm([a, b])
    assert eng.ns_list() == []


def test_host_netns_parameter_isolates_from_the_caller(sandbox):
    eng = sandbox.engine()
    net = _net(eng)
    with open("/proc/net/dev") as f:  # the caller's (root) namespace
        assert net.bridge not in f.read()

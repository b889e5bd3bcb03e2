"""The kernel layer on its own, inside a sandbox host namespace."""

import errno
import os

import pytest

from nsnet import kernel as k
from nsnet.kernel.netlink import NetlinkError


@pytest.fixture
def host(sandbox):
    ns = k.open_netns(sandbox.host_path)
    rt = k.open_rtnl(ns)
    yield ns, rt
    rt.close()
    ns.close()


def test_create_netns_is_an_nsfs_bind_mount(sandbox):
    ns = k.create_netns(sandbox.netns_dir, sandbox.name("n"))
    try:
        assert k.is_netns_mount(ns.path)
        assert sandbox.name("n") in k.list_netns(sandbox.netns_dir)
        snap = k.snapshot(ns)
        assert [(lk.name, lk.up) for lk in snap.links] == [("lo", False)]
        assert snap.routes == []
        with pytest.raises(FileExistsError):
            k.create_netns(sandbox.netns_dir, sandbox.name("n"))
    finally:
        ns.close()


def test_caller_namespace_is_untouched(sandbox):
    before = os.stat("/proc/thread-self/ns/net").st_ino
    k.create_netns(sandbox.netns_dir, sandbox.name("x")).close()
    with k.entered(k.open_netns(sandbox.host_path).fd):
        assert os.stat("/proc/thread-self/ns/net").st_ino != before
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


def test_veth_peer_created_inside_with_host_end_enslaved(sandbox, host):
    _ns_h, rt = host
    inner = k.create_netns(sandbox.netns_dir, sandbox.name("v"))
    rt.run([k.req_new_bridge("brk", mac="02:00:00:00:00:aa")])
    br = rt.link("brk")
    assert br.up and br.mac == "02:00:00:00:00:aa"
    rt.run([k.req_new_veth(k.VethSpec("vk0", "eth0", inner.fd, master=br.index, mtu=1400,
                                      peer_mac=k.mac_bytes("02:00:00:00:00:01"))),
            k.req_set_link("vk0", up=True, alias="nsnet:test")])
    host_end = rt.link("vk0")
    assert host_end.master == br.index and host_end.up and host_end.alias == "nsnet:test"
    assert host_end.mtu == 1400 and host_end.kind == "veth"
    peer = k.snapshot(inner).link("eth0")
    assert peer is not None and peer.mac == "02:00:00:00:00:01" and peer.mtu == 1400
    inner.close()


def test_batch_reports_each_request(host):
    _, rt = host
    reqs = [k.req_new_bridge(f"bb{i}") for i in range(40)] + [k.req_new_bridge("bb0")]
    result = rt.batch(reqs)
    assert [e for e, _ in result.errors[:40]] == [0] * 40
    assert result.errors[40][0] == errno.EEXIST
    assert len({lk.name for lk in rt.links() if lk.name.startswith("bb")}) == 40


def test_errors_name_the_request(host):
    _, rt = host
    with pytest.raises(NetlinkError, match="set link nosuch: No such device"):
        rt.run([k.req_set_link("nosuch", up=True)])


def test_group_delete_takes_only_the_group(host):
    _, rt = host
    rt.run([k.req_new_bridge("keep0")] + [k.req_new_bridge(f"gone{i}", group=777)
                                          for i in range(5)])
    rt.run([k.req_del_group(777)])
    names = {lk.name for lk in rt.links()}
    assert "keep0" in names and not any(n.startswith("gone") for n in names)


def test_addresses_and_routes(host):
    _, rt = host
    rt.run([k.req_new_bridge("bra")])
    idx = rt.link("bra").index
    rt.run([k.req_add_addr(idx, "198.51.100.1/24"), k.req_add_route("203.0.113.0/24",
                                                                     "198.51.100.9")])
    assert k.Address(idx, "198.51.100.1", 24) in rt.addresses()
    dsts = {(r.dst, r.gateway) for r in rt.routes()}
    assert ("203.0.113.0/24", "198.51.100.9") in dsts
    assert ("198.51.100.0/24", None) in dsts


def test_sysctl_is_written_in_the_target_namespace(sandbox):
    """The value written inside is the opposite of the caller's: written in
    the wrong namespace, either the inner read or the caller's would show it."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        caller_before = f.read().strip()
    value = "0" if caller_before == "1" else "1"
    inner = k.create_netns(sandbox.netns_dir, sandbox.name("s"))
    k.write_sysctls(inner, {"net/ipv4/ip_forward": value, "net/nope/missing": "1"})
    with k.entered(inner.fd), open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == value
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == caller_before  # the caller's namespace is untouched
    assert k.read_sysctl(inner, "net/ipv4/ip_forward") == value
    inner.close()


def _mount_tables() -> dict[str, str]:
    """Every mount table this test can see: its own and the init process's
    (the machine's), each read whole."""
    return {p: open(p).read() for p in ("/proc/self/mountinfo", "/proc/1/mountinfo")}


def _proc_mounts(tables: dict[str, str]) -> dict[str, list[str]]:
    return {p: [ln for ln in t.splitlines() if " - proc " in ln] for p, t in tables.items()}


def test_sysctls_go_through_a_private_proc_that_no_mount_table_shows(sandbox, monkeypatch):
    """Sysctls are looked up through a detached, renewed proc instance (the
    dcache growth of the shared /proc, kernel/netns.py): many renewals later
    no mount appeared anywhere, no fd is left over, and every namespace got
    its own value -- written in the wrong one, a read back would differ."""
    from nsnet.kernel import netns as knetns

    monkeypatch.setattr(knetns, "_PROC_RENEW", 3)
    before, fds_before = _mount_tables(), len(os.listdir("/proc/self/fd"))
    made = [k.create_netns(sandbox.netns_dir, sandbox.name(f"p{i}-"),
                           {"net/ipv4/ip_forward": str(i % 2)}) for i in range(8)]
    try:
        assert knetns.PROC_SYS._fd >= 0  # the private instance, not the /proc fallback
        for i, ns in enumerate(made):
            assert k.read_sysctl(ns, "net/ipv4/ip_forward") == str(i % 2)
            with k.entered(ns.fd), open("/proc/sys/net/ipv4/ip_forward") as f:
                assert f.read().strip() == str(i % 2)  # as the host's /proc sees it too
        assert _proc_mounts(_mount_tables()) == _proc_mounts(before)  # while live, too
    finally:
        for ns in made:
            ns.close()
            k.remove_netns(ns.path)
    assert _mount_tables() == before
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 1  # at most the one live instance


def test_sysctls_fall_back_to_the_hosts_proc_without_the_mount_api(sandbox, monkeypatch):
    from nsnet.kernel import netns as knetns

    fresh = knetns._ProcSys()
    monkeypatch.setattr(fresh, "_new_mount", lambda: -1)
    monkeypatch.setattr(knetns, "PROC_SYS", fresh)
    ns = k.create_netns(sandbox.netns_dir, sandbox.name("f"), {"net/ipv4/ip_forward": "1"})
    try:
        assert k.read_sysctl(ns, "net/ipv4/ip_forward") == "1" and fresh._fd == -1
    finally:
        ns.close()
        k.remove_netns(ns.path)


def test_ping_and_reachable(sandbox, host):
    _ns_h, rt = host
    inner = k.create_netns(sandbox.netns_dir, sandbox.name("p"))
    rt.run([k.req_new_veth(k.VethSpec("vp0", "eth0", inner.fd)), k.req_set_link("vp0", up=True)])
    rt.run([k.req_add_addr(rt.link("vp0").index, "198.51.100.1/24")])
    with k.open_rtnl(inner) as irt:
        idx = irt.link("eth0").index
        irt.run([k.req_set_link(index=idx, up=True), k.req_add_addr(idx, "198.51.100.2/24")])
    echoes = list(k.ping(inner.fd, "198.51.100.1", 3, 0.05, 1.0))
    assert [e.seq for e in echoes] == [1, 2, 3] and all(e.rtt_ms is not None for e in echoes)
    assert echoes[0].ttl == 64
    assert k.reachable(inner.fd, ["198.51.100.1", "198.51.100.77"], timeout=0.5) == {
        "198.51.100.1": True, "198.51.100.77": False}
    inner.close()

"""Overlay foundations end to end: simulated hosts, a real 3-member etcd,
VXLAN devices and FDB/neighbour entries made by nsnet's own netlink
requests and programmed from the etcd registry by the watcher.

Promises tried here:
* endpoints on different hosts of one overlay reach each other, and nothing
  floods the underlay: no encapsulated ARP or broadcast crosses it (a
  sniffer on the underlay bridge's namespace counts every frame);
* a dead host's entries vanish from the others within its lease's TTL;
* one etcd member of three killed: the registry keeps working (clients and
  watches fail over);
* quorum lost: a new connect fails with an error naming the store, nothing
  is half-made on the host, existing traffic keeps flowing; when quorum
  returns, connects work again without manual steps;
* etcd listens only on the underlay addresses, inside the sandbox, and the
  world leaves no process behind.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from nsnet.cluster import alloc, membership
from nsnet.cluster.store import wait_for
from nsnet.errors import StoreUnavailable
from overlay_world import HostOverlay, OverlayWorld

pytestmark = pytest.mark.skipif(  # under CI a missing etcd fails loudly instead
    not os.path.exists("/usr/bin/etcd") and os.environ.get("CI") != "true",
    reason="needs etcd-server (make test-deps)")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = OverlayWorld(tmp_path_factory.mktemp("overlay") / "w", n=3)
    try:
        yield w
    finally:
        pids = [h.member.proc.pid for h in w.hosts if h.member and h.member.proc]
        w.close()
        for pid in pids:  # every member reaped: nothing left listening
            assert not os.path.exists(f"/proc/{pid}/status") or _zombie(pid)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        return "State:\tZ" in f.read()


class Sniffer:
    """Every frame on every port of the underlay bridge (AF_PACKET, opened
    inside the underlay namespace), classified."""

    def __init__(self, netns_path: str) -> None:
        from nsnet.kernel import entered, open_netns

        ns = open_netns(netns_path)
        try:
            with entered(ns.fd):
                self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        finally:
            ns.close()
        self.sock.settimeout(0.2)
        self.vxlan = self.inner_arp = self.inner_broadcast = self.underlay_arp = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                frame = self.sock.recv(65535)
            except TimeoutError:
                continue
            self._count(frame)

    def _count(self, f: bytes) -> None:
        ethertype = struct.unpack_from("!H", f, 12)[0]
        if ethertype == 0x0806:
            self.underlay_arp += 1
        if ethertype != 0x0800 or len(f) < 14 + 20 + 8 + 8 + 14 or f[23] != 17:
            return
        ihl = (f[14] & 0x0F) * 4
        if struct.unpack_from("!H", f, 14 + ihl + 2)[0] != 4789:
            return
        self.vxlan += 1
        inner = 14 + ihl + 8 + 8
        if f[inner:inner + 6] == b"\xff" * 6:
            self.inner_broadcast += 1
        if struct.unpack_from("!H", f, inner + 12)[0] == 0x0806:
            self.inner_arp += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def overlay(world):
    """The overlay "ov" on every host, two endpoints per host."""
    admin = world.store(world.hosts[0])
    net = alloc.create_network(admin, "ov", "10.200.0.0/16")
    admin.close()
    hosts = []
    try:
        for h in world.hosts:
            hosts.append(HostOverlay(world, h, net))
        for ho in hosts:
            ho.connect("a")
            ho.connect("b")
        yield hosts
    finally:
        for ho in hosts:
            ho.close()


def _converged(hosts) -> bool:
    want = {ip for ho in hosts for _, ip in ho.endpoints.values()}
    for ho in hosts:
        local = {ip for _, ip in ho.endpoints.values()}
        if {ip for ip, _ in ho.applier.neigh} != want - local:
            return False
    return True


def test_etcd_listens_only_on_the_underlay(world):
    for h in world.hosts:
        assert world.listeners(h) == [f"{h.ip}:2379", f"{h.ip}:2380"]
        # ... in its host's namespace, never in the caller's
        ns = os.stat(f"/proc/{h.member.proc.pid}/ns/net").st_ino
        assert ns == os.stat(h.path).st_ino != os.stat("/proc/self/ns/net").st_ino


def test_the_gateway_paths_of_etcd_3_4(world):
    """nsnet pins /v3/ (store.py says why): Debian's etcd 3.4 serves it."""
    from nsnet.cluster.transport import netns_session

    h = world.hosts[0]
    session = netns_session(h.path)
    try:
        version = session.get(f"http://{h.ip}:2379/version", timeout=5).json()
        assert version["etcdserver"].startswith("3.4.")
        codes = {p: session.post(f"http://{h.ip}:2379/{p}/kv/range", json={"key": "Lw=="},
                                 timeout=5).status_code for p in ("v3", "v3beta", "v3alpha")}
        assert codes == {"v3": 200, "v3beta": 200, "v3alpha": 404}
    finally:
        session.close()


def test_endpoints_on_different_hosts_ping_and_nothing_floods(world, overlay):
    assert wait_for(lambda: _converged(overlay), timeout=5)
    h1, h2, h3 = overlay
    # the device as the kernel has it: learning off, ARP proxy, MTU = 1500 - 50
    detail = h1.host.run("ip", "-d", "link", "show", h1.vxlan).stdout
    assert "nolearning" in detail and "proxy" in detail and "mtu 1450" in detail
    assert f"id {h1.network.vni} " in detail and "dstport 4789" in detail
    # FDB on h1: exactly the four remote endpoints, each to its host's VTEP
    assert {(e.mac, e.dst) for e in h1.fdb()} == set(h1.applier.fdb)
    assert {e.dst for e in h1.fdb()} == {h2.host.ip, h3.host.ip}
    assert all(e.mac != "00:00:00:00:00:00" for e in h1.fdb())  # no flooding entry
    sniffer = Sniffer(world.underlay)
    try:
        time.sleep(0.2)
        for src, dst in ((h1, h2), (h2, h3), (h3, h1), (h1, h3)):
            for ep in ("a", "b"):
                ip = dst.endpoints[ep][1]
                assert src.ping("a", ip), f"{src.host.name}/a -> {dst.host.name}/{ep} {ip}"
        time.sleep(0.2)
    finally:
        sniffer.close()
    assert sniffer.vxlan > 0  # the sniffer saw the overlay's traffic ...
    assert sniffer.inner_arp == 0  # ... and no ARP inside it (answered locally)
    assert sniffer.inner_broadcast == 0  # ... and no broadcast (nothing flooded)


def test_no_arp_reaches_a_remote_host(world, overlay):
    """An ARP for a remote endpoint is answered on the asking host: the
    remote endpoint's namespace never sees an ARP request from across."""
    h1, h2, _ = overlay
    path, _ = h1.endpoints["b"]
    h1.host.run("nsenter", f"--net={path}", "ip", "neigh", "flush", "dev", "eth0")
    assert h1.ping("b", h2.endpoints["b"][1])
    lladdr = h1.host.run("nsenter", f"--net={path}", "ip", "neigh", "show", "dev", "eth0").stdout
    assert h2.endpoints["b"][1] in lladdr  # resolved (by h1's VXLAN proxy)


def test_a_restarted_watcher_converges_the_kernel_both_ways(world, overlay):
    """After a crash the kernel may hold entries nobody wants any more (an
    endpoint withdrawn while the host was down) and lack wanted ones: a
    watcher started on an applier synced from the kernel fixes both."""
    from nsnet.cluster import registry

    h1 = overlay[0]
    h1.watcher.stop()
    stale_mac, stale_ip = "02:42:0a:c8:ee:01", "10.200.238.1"
    h1.host.run("bridge", "fdb", "append", stale_mac, "dev", h1.vxlan, "dst", "198.51.100.99",
                "self", "permanent")
    h1.host.run("ip", "neigh", "replace", stale_ip, "lladdr", stale_mac, "dev", h1.vxlan,
                "nud", "permanent")
    wanted = set(h1.applier.fdb)
    one = next(iter(wanted))
    h1.host.run("bridge", "fdb", "del", one[0], "dev", h1.vxlan, "dst", one[1], "self")
    h1.applier = registry.VxlanApplier(h1.rt, h1.vx_index).sync_from_kernel()
    assert (stale_mac, "198.51.100.99") in h1.applier.fdb and one not in h1.applier.fdb
    h1.watcher = registry.RegistryWatcher(h1.store, "ov", "h1", h1._apply,
                                          local_vtep=h1.host.ip).start()
    assert {(e.mac, e.dst) for e in h1.fdb()} == wanted
    neigh = h1.host.run("ip", "neigh", "show", "dev", h1.vxlan).stdout
    assert stale_ip not in neigh


def test_one_member_killed_registry_keeps_working(world, overlay):
    h1, _, h3 = overlay
    world.hosts[2].member.kill()  # h3's own member: its store and watch fail over
    try:
        ip = h3.connect("c")  # published through another member
        assert wait_for(lambda: ip in {i for i, _ in h1.applier.neigh}, timeout=5)
        ip1 = h1.connect("c")
        assert wait_for(lambda: ip1 in {i for i, _ in h3.applier.neigh}, timeout=10)
        assert h1.ping("c", ip) and h3.ping("c", ip1)
        health = {m.endpoint: m.healthy for m in h1.store.health()}
        assert health[f"{world.hosts[2].ip}:2379"] is False and sum(health.values()) == 2
    finally:
        world.hosts[2].member.start()
        world.wait_healthy()


def test_a_member_cut_off_from_its_peers_hands_its_watchers_over(world, overlay):
    """h2's etcd member loses its peers (peer port dropped in h2's
    namespace) but still answers h2: a watch that stayed on it would hear
    nothing more.  nsnet's watch requires a leader, so it moves to a member
    that has one, and h2's own writes fail over too."""
    from nsnet.cluster import registry

    h1, h2, _ = overlay
    fresh = world.store(h2.host)  # its own member first
    seen: set[str] = set()
    watcher = registry.RegistryWatcher(
        fresh, "ov", "h2", lambda d: seen.update(ip for ip, _ in d.neigh)).start()
    table = ["nft", "add", "table", "inet", "cut"]
    h2.host.run(*table)
    h2.host.run("nft", "add", "chain", "inet", "cut", "c",
                "{ type filter hook output priority 0 ; }")
    h2.host.run("nft", "add", "rule", "inet", "cut", "c", "tcp", "dport", "2380", "drop")
    h2.host.run("nft", "add", "rule", "inet", "cut", "c", "tcp", "sport", "2380", "drop")
    try:
        time.sleep(0.5)
        ip = h1.connect("p")
        assert wait_for(lambda: ip in seen, timeout=10), "the watch stayed on a cut-off member"
        ip2 = h2.connect("p")  # h2 writes through a member with quorum
        assert wait_for(lambda: ip2 in {i for i, _ in h1.applier.neigh}, timeout=5)
    finally:
        watcher.stop()
        fresh.close()
        h2.host.run("nft", "delete", "table", "inet", "cut")
        world.wait_healthy()


def test_quorum_lost_clear_error_nothing_half_made_traffic_flows(world, overlay):
    from nsnet.cluster.store import EtcdStore, parse_store_url

    h1, h2, _ = overlay
    # a short timeout so the test does not wait 3 x 5 s
    fast = EtcdStore(parse_store_url(world.store_url, timeout=1.0, netns=h1.host.path))
    orig, h1.store = h1.store, fast
    h1.alloc.store = fast
    links = h1.links()
    names = set(os.listdir(world.ns_dir))
    for h in world.hosts[1:]:
        h.member.kill()
    try:
        # (1) the address comes from a block h1 holds (no store call): the
        # kernel objects are made, then publishing fails -> all undone
        with pytest.raises(StoreUnavailable) as err:
            h1.connect("q")
        assert world.store_url in str(err.value) and "quorum" in str(err.value)
        assert err.value.exit_code == 11
        assert h1.links() == links and set(os.listdir(world.ns_dir)) == names
        # (2) a block must be claimed first: fails before the kernel
        h1.alloc.blocks = []
        with pytest.raises(StoreUnavailable, match="quorum"):
            h1.connect("q")
        assert h1.links() == links and set(os.listdir(world.ns_dir)) == names
        assert h1.ping("a", h2.endpoints["a"][1])  # the data plane does not need etcd
    finally:
        for h in world.hosts[1:]:
            h.member.start()
        world.wait_healthy()
    ip = h1.connect("q")  # quorum is back: no manual step
    assert wait_for(lambda: ip in {i for i, _ in h2.applier.neigh}, timeout=10)
    assert h2.ping("a", ip)
    h1.store = h1.alloc.store = orig
    fast.close()


def test_a_dead_hosts_entries_go_within_its_ttl(world, overlay):
    from nsnet.cluster import registry
    from nsnet.cluster.keys import Keys

    h1, h2, _ = overlay
    store = h1.store
    # a host "h9" with a 2 s liveness lease publishes an endpoint, then
    # goes silent (never renews): etcd expires the lease, the record goes
    lease = store.lease_grant(2)
    rec = registry.EndpointRecord("ov", "h9", "z", "10.200.250.9", "02:42:0a:c8:fa:09",
                                  "198.51.100.99")
    registry.publish(store, rec, lease)
    assert wait_for(lambda: "10.200.250.9" in {i for i, _ in h2.applier.neigh}, timeout=5)
    t0 = time.monotonic()
    assert wait_for(lambda: "10.200.250.9" not in {i for i, _ in h2.applier.neigh}, timeout=6)
    assert time.monotonic() - t0 < 2 + 3  # TTL plus etcd's expiry check slack
    assert ("02:42:0a:c8:fa:09", "198.51.100.99") not in {(e.mac, e.dst) for e in h2.fdb()}
    assert store.get(Keys().endpoint("ov", "h9", "z")) is None


def test_status_lists_hosts_liveness_and_store_health(world, overlay):
    st = membership.status(overlay[0].store)
    assert st.quorum and len(st.members) == 3
    by_name = {h.name: h for h in st.hosts}
    assert set(by_name) >= {"h1", "h2", "h3"}
    assert all(by_name[n].alive for n in ("h1", "h2", "h3"))
    assert by_name["h1"].endpoints >= 2


# ------------------------------------------------------------------ the CLI
def _nsnet(host, *args: str, timeout: float = 30):
    import subprocess
    import sys

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NSNET_HOST_NETNS": host.path,
           "REQUESTS_CA_BUNDLE": os.environ.get("REQUESTS_CA_BUNDLE", ""),
           "NSNET_STATE_DIR": host.state_dir, "NSNET_STORE_TIMEOUT": "1.5"}
    return subprocess.run([sys.executable, "-I", "-m", "nsnet.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _etcdctl(world, host, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "ETCDCTL_API": "3"}
    import subprocess

    eps = ",".join(f"http://{h.ip}:2379" for h in world.hosts)
    return subprocess.run(["nsenter", f"--net={host.path}", "etcdctl", "--endpoints", eps,
                           *args], env=env, capture_output=True, text=True, check=True).stdout


def _status(host) -> dict:
    import json

    proc = _nsnet(host, "cluster", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_join_status_agent_leave(world, overlay):
    import subprocess
    import sys

    h1, h2 = world.hosts[0], world.hosts[1]
    agent = None
    try:
        for h, name in ((h1, "cli1"), (h2, "cli2")):
            proc = _nsnet(h, "cluster", "join", "--store", world.store_url, "--advertise",
                          h.ip, "--name", name, "--ttl", "3")
            assert proc.returncode == 0, proc.stderr
            assert f"as {name} ({h.ip})" in proc.stdout
            if agent is None:  # cli1 is kept alive by its agent, cli2 by nobody
                agent = subprocess.Popen(
                    [sys.executable, "-I", "-m", "nsnet.cli", "cluster", "agent"],
                    env={"PATH": "/usr/bin:/bin", "NSNET_HOST_NETNS": h1.path,
                         "NSNET_STATE_DIR": h1.state_dir},
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        joined = time.monotonic()
        # etcd's own client sees nsnet's keys where the layout says
        keys = _etcdctl(world, h2, "get", "--prefix", "/nsnet/v1/", "--keys-only").split()
        assert {"/nsnet/v1/members/cli1", "/nsnet/v1/alive/cli1", "/nsnet/v1/members/cli2",
                "/nsnet/v1/networks/ov"} <= set(keys)
        st = _status(h1)
        assert st["quorum"] and st["self"] == "cli1" and len(st["members"]) == 3
        assert all(m["healthy"] for m in st["members"])
        assert {h["name"]: h for h in st["hosts"]}["cli1"]["alive"]
        # a second join under another name: refused
        proc = _nsnet(h1, "cluster", "join", "--store", world.store_url, "--advertise",
                      h1.ip, "--name", "other")
        assert proc.returncode == 5 and "leave first" in proc.stderr
        # past the TTL: cli1 (agent) alive, cli2 (silent) dead
        time.sleep(max(0.0, joined + 3 + 1.5 - time.monotonic()))
        hosts = {h["name"]: h for h in _status(h1)["hosts"]}
        assert hosts["cli1"]["alive"] and not hosts["cli2"]["alive"]
        assert hosts["cli2"]["advertise"] == h2.ip  # still a member: its blocks stay its own
        proc = _nsnet(h2, "cluster", "forget", "cli1")  # alive: refused
        assert proc.returncode == 5 and "alive" in proc.stderr
    finally:
        if agent is not None:
            agent.kill()  # by PID
            agent.wait()
    # leave: gone from the cluster, local membership forgotten
    assert _nsnet(h1, "cluster", "leave").returncode == 0
    proc = _nsnet(h1, "cluster", "status")
    assert proc.returncode == 3 and "not joined" in proc.stderr
    assert "/nsnet/v1/members/cli1" not in _etcdctl(world, h2, "get", "--prefix",
                                                    "/nsnet/v1/members/", "--keys-only")
    proc = _nsnet(h2, "cluster", "forget", "cli2")  # a dead host, declared gone
    assert proc.returncode == 0, proc.stderr
    assert "/nsnet/v1/members/cli2" not in _etcdctl(world, h2, "get", "--prefix",
                                                    "/nsnet/v1/members/", "--keys-only")
    assert _nsnet(h2, "cluster", "leave").returncode == 0  # forgotten, it still leaves cleanly
    assert not os.path.exists(os.path.join(h2.state_dir, "cluster.json"))


def test_cli_without_quorum_names_the_store(world, overlay):
    h1 = world.hosts[0]
    proc = _nsnet(h1, "cluster", "join", "--store", world.store_url, "--advertise", h1.ip,
                  "--name", "q1")
    assert proc.returncode == 0, proc.stderr
    for h in world.hosts[1:]:
        h.member.kill()
    try:
        proc = _nsnet(h1, "cluster", "status")
        assert proc.returncode == 11 and "NO QUORUM" in proc.stdout
        proc = _nsnet(h1, "cluster", "leave", timeout=60)
        assert proc.returncode == 11
        assert world.store_url in proc.stderr and "unavailable" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        for h in world.hosts[1:]:
            h.member.start()
        world.wait_healthy()
    assert _nsnet(h1, "cluster", "leave").returncode == 0


# ------------------------------------------------------------------ TLS
@pytest.fixture(scope="module")
def tls_world(tmp_path_factory: pytest.TempPathFactory):
    w = OverlayWorld(tmp_path_factory.mktemp("overlay-tls") / "w", n=1, tls=True)
    try:
        yield w
    finally:
        w.close()


def test_cli_over_tls_with_client_certificates(tls_world, monkeypatch):
    h = tls_world.hosts[0]
    t = tls_world.tls
    url = tls_world.store_url
    # the environment's CA bundle must not replace --cacert (requests would)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    base = ["cluster", "join", "--store", url, "--advertise", h.ip, "--name", "t1"]
    proc = _nsnet(h, *base, "--cacert", t["ca"])  # no client certificate: refused
    assert proc.returncode == 11 and url in proc.stderr and "Traceback" not in proc.stderr
    proc = _nsnet(h, *base, "--cert", t["client_cert"], "--key", t["client_key"])
    assert proc.returncode == 11  # the member's certificate cannot be verified
    proc = _nsnet(h, *base, "--cacert", t["ca"], "--cert", t["client_cert"],
                  "--key", t["client_key"])
    assert proc.returncode == 0, proc.stderr
    st = _status(h)  # the TLS settings are remembered in cluster.json
    assert st["quorum"] and [x["name"] for x in st["hosts"]] == ["t1"]
    assert _nsnet(h, "cluster", "leave").returncode == 0


def test_three_hosts_allocating_concurrently_never_collide(world, overlay):
    """3 hosts x 100 addresses at once on the real etcd, with small blocks
    (/28) so claims contend: 300 distinct addresses, each inside a block
    whose affinity names the host that handed it out; and concurrent
    network creates get distinct VNIs."""
    import ipaddress
    import json
    import threading

    from nsnet.cluster.keys import Keys

    admin = overlay[0].store
    net = alloc.create_network(admin, "conc", "10.210.0.0/20", block=28)
    got: dict[str, list] = {}
    vnis: dict[str, int] = {}
    errors: list = []

    def work(ho) -> None:
        try:
            a = alloc.BlockAllocator(ho.store, net, ho.host.name)
            used: set = set()
            for _ in range(100):
                used.add(a.allocate(used))
            got[ho.host.name] = sorted(used)
            n = alloc.create_network(ho.store, f"conc-{ho.host.name}",
                                     f"10.{220 + ho.host.index}.0.0/16")
            vnis[ho.host.name] = n.vni
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ho,)) for ho in overlay]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    everything = [ip for ips in got.values() for ip in ips]
    assert len(everything) == len(set(everything)) == 300
    assert len(set(vnis.values())) == 3
    blocks, _ = admin.get_prefix(Keys().blocks("conc"))
    owner = {ipaddress.ip_network(k.key.rsplit("/", 1)[1].replace("-", "/")):
             json.loads(k.value)["host"] for k in blocks}
    for host, ips in got.items():
        for ip in ips:
            assert [h for b, h in owner.items() if ip in b] == [host]


def test_convergence_time_from_publish_to_remote_fdb(world, overlay):
    """The registry's part of the convergence target (#17: p50 <= 0.3 s,
    p99 <= 1 s): from an endpoint record's put returning on h1 to the FDB
    and neighbour entries being in h2's kernel.  Measured from *before* the
    put: measured from its return, most deltas are 0 -- h2's watch event
    often arrives before h1's HTTP answer does."""
    from nsnet.cluster import registry

    h1, h2, _ = overlay
    delays = []
    for i in range(30):
        ip = f"10.200.240.{i + 2}"
        rec = registry.EndpointRecord("ov", "h1", f"conv{i}", ip, f"02:42:0a:c8:f0:{i + 2:02x}",
                                      h1.host.ip)
        t0 = time.monotonic()
        registry.publish(h1.store, rec, h1.lease)
        assert wait_for(lambda ip=ip: ip in {i for i, _ in h2.applier.neigh}, 5, step=0.002)
        delays.append(time.monotonic() - t0)
        registry.withdraw(h1.store, "ov", "h1", f"conv{i}")
    delays.sort()
    p50, p99 = delays[len(delays) // 2], delays[-1]
    print(f"registry convergence: p50 {p50 * 1000:.1f} ms, max {p99 * 1000:.1f} ms")
    assert p50 <= 0.3 and p99 <= 1.0

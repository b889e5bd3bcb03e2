"""A sandboxed multi-host world for overlay tests.

Simulated hosts are network namespaces, each with its own nsnet state
directory, joined by an underlay bridge that lives in a namespace of its
own::

    [h1 eth0 198.51.100.11] --u1--+
    [h2 eth0 198.51.100.12] --u2--+-- ubr (namespace "underlay")
    [h3 eth0 198.51.100.13] --u3--+

A real etcd cluster (Debian's etcd-server, /usr/bin/etcd) runs one member
per host, inside that host's namespace, listening only on its underlay
address (client 2379, peer 2380), data in the world's temp directory, with
heartbeat/election timeouts cut for tests (50 ms / 500 ms) so it elects a
leader within about a second.  Members are started and stopped by PID,
never by name.  Nothing is made outside the namespaces and the directory
given, and :meth:`OverlayWorld.close` removes all of it.

Every namespace here is private to the world, so names inside need not be
unique; the namespaces themselves are files in the world's own directory
(not /run/netns).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ETCD = "/usr/bin/etcd"
UNDERLAY = "198.51.100.0/24"
UNDERLAY_MTU = 1500


def underlay_ip(i: int) -> str:
    return f"198.51.100.{10 + i}"


@dataclass
class Member:
    """One etcd member: its argv (to restart it alike), process, log."""

    name: str
    host: SimHost
    argv: list[str]
    log: str
    proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"{self.host.ip}:2379"

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={self.host.path}", *self.argv], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                start_new_session=True)
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL by PID (nsenter exec'd etcd: the PID is etcd's)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class SimHost:
    index: int
    name: str
    path: str  # the namespace file
    state_dir: str
    ip: str
    member: Member | None = None
    extra: dict = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.path}", *argv],
                              capture_output=True, text=True, check=check)


class OverlayWorld:
    """``n`` simulated hosts on one underlay, with an etcd member each."""

    def __init__(self, base: Path, n: int = 3, etcd: bool = True, tls: bool = False) -> None:
        from nsnet.kernel import create_netns, ensure_netns_dir

        self.id = uuid.uuid4().hex[:6]
        self.base = base
        self.tls: dict[str, str] | None = None
        self._want_tls = tls
        self.ns_dir = str(base / "ns")
        ensure_netns_dir(self.ns_dir)
        self.hosts: list[SimHost] = []
        self.closed = False
        try:
            create_netns(self.ns_dir, "underlay").close()
            self.underlay = os.path.join(self.ns_dir, "underlay")
            self.u("ip", "link", "add", "ubr", "type", "bridge")
            self.u("ip", "link", "set", "ubr", "up")
            self.u("ip", "link", "set", "lo", "up")
            for i in range(1, n + 1):
                self._add_host(i, create_netns)
            if tls:
                self.tls = make_certs(base / "pki", [h.ip for h in self.hosts])
            if etcd:
                self.start_etcd()
        except BaseException:
            self.close()
            raise

    # -- topology
    def u(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.underlay}", *argv],
                              capture_output=True, text=True, check=True)

    def _add_host(self, i: int, create_netns) -> None:
        name = f"h{i}"
        create_netns(self.ns_dir, name).close()
        host = SimHost(i, name, os.path.join(self.ns_dir, name),
                       str(self.base / name / "state"), underlay_ip(i))
        os.makedirs(host.state_dir)
        self.hosts.append(host)
        self.u("ip", "link", "add", f"u{i}", "mtu", str(UNDERLAY_MTU), "master", "ubr",
               "type", "veth", "peer", "name", "eth0", "netns", host.path)
        self.u("ip", "link", "set", f"u{i}", "up")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")

    # -- etcd
    @property
    def store_url(self) -> str:
        return "etcd://" + ",".join(f"{h.ip}:2379" for h in self.hosts)

    def start_etcd(self, timeout: float = 20) -> None:
        cluster = ",".join(f"m{h.index}=http://{h.ip}:2380" for h in self.hosts)
        scheme = "https" if self.tls else "http"
        for h in self.hosts:
            data = self.base / "etcd" / f"m{h.index}"
            data.mkdir(parents=True)
            argv = [ETCD, "--name", f"m{h.index}", "--data-dir", str(data),
                    "--listen-client-urls", f"{scheme}://{h.ip}:2379",
                    "--advertise-client-urls", f"{scheme}://{h.ip}:2379",
                    "--listen-peer-urls", f"http://{h.ip}:2380",
                    "--initial-advertise-peer-urls", f"http://{h.ip}:2380",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", f"nsnet-{self.id}",
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                    "--snapshot-count", "10000", "--enable-v2=false",
                    "--logger", "zap", "--log-level", "error"]
            if self.tls:  # clients must show a certificate of our CA
                argv += ["--cert-file", self.tls["server_cert"],
                         "--key-file", self.tls["server_key"],
                         "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
            h.member = Member(f"m{h.index}", h, argv, str(self.base / "etcd" / f"m{h.index}.log"))
            h.member.start()
        self.wait_healthy(timeout)

    def store(self, host: SimHost, timeout: float = 3.0, local_first: bool = True):
        """An EtcdStore connecting from ``host``'s namespace, its own member first."""
        from nsnet.cluster.store import EtcdStore, parse_store_url

        order = sorted(self.hosts, key=lambda h: (h is not host) if local_first else 0)
        url = "etcd://" + ",".join(f"{h.ip}:2379" for h in order)
        tls = self.tls or {}
        return EtcdStore(parse_store_url(url, tls.get("ca"), tls.get("client_cert"),
                                         tls.get("client_key"), timeout=timeout,
                                         netns=host.path))

    def wait_healthy(self, timeout: float = 20, members: list[SimHost] | None = None) -> None:
        deadline = time.monotonic() + timeout
        members = members or self.hosts
        store = self.store(members[0], timeout=1.0)
        try:
            while True:
                health = {m.endpoint: m.healthy for m in store.health()}
                if all(health.get(f"{h.ip}:2379") for h in members):
                    return
                for h in members:
                    if h.member and not h.member.running:
                        raise RuntimeError(f"etcd {h.member.name} exited: "
                                           + Path(h.member.log).read_text()[-2000:])
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd not healthy after {timeout}s: {health}")
                time.sleep(0.1)
        finally:
            store.close()

    def listeners(self, host: SimHost) -> list[str]:
        """Local addresses of TCP listeners in ``host`` (``ss -ltnH``)."""
        out = host.run("ss", "-ltnH").stdout
        return sorted(line.split()[3] for line in out.splitlines() if line.strip())

    # -- teardown
    def close(self) -> None:
        from nsnet.kernel.netns import umount

        if self.closed:
            return
        self.closed = True
        for h in self.hosts:
            if h.member is not None:
                h.member.kill()
        names = os.listdir(self.ns_dir) if os.path.isdir(self.ns_dir) else []
        for path in [os.path.join(self.ns_dir, n) for n in names] + [self.ns_dir]:
            while True:  # stacked mounts are possible: peel them all
                try:
                    umount(path)
                except OSError:
                    break
        shutil.rmtree(self.base, ignore_errors=True)


def make_certs(pki: Path, ips: list[str]) -> dict[str, str]:
    """A throwaway CA, a server certificate for the members' underlay
    addresses (also usable as a client: etcd's gateway dials its own gRPC
    port with it) and a client certificate, with openssl; valid one day."""
    pki.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=pki)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=nsnet test CA")
    sans = ",".join(f"IP:{ip}" for ip in ips)
    for name, usage, san in (("server", "serverAuth,clientAuth", f"subjectAltName={sans}\n"),
                             ("client", "clientAuth", "")):
        (pki / f"{name}.ext").write_text(f"{san}extendedKeyUsage={usage}\n")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=nsnet test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext")
    return {"ca": str(pki / "ca.crt"), "server_cert": str(pki / "server.crt"),
            "server_key": str(pki / "server.key"), "client_cert": str(pki / "client.crt"),
            "client_key": str(pki / "client.key")}


# ------------------------------------------------------------------ data plane
def mac_of(ip: str) -> str:
    """02:42 + the IPv4 address, as Docker derives endpoint MACs."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


class HostOverlay:
    """One simulated host's part of one overlay network, built from the
    cluster parts the overlay driver will compose: membership (liveness
    lease), block IPAM, a bridge + VXLAN device made by nsnet's own netlink
    requests, endpoint records, and a registry watcher programming the
    VXLAN device's FDB/neighbour entries.  The order of :meth:`connect` is
    the driver's: addresses from the store first, then the kernel, then the
    record -- a store failure before the kernel step leaves nothing, one
    after it is undone."""

    def __init__(self, world: OverlayWorld, host: SimHost, network, store=None) -> None:
        from nsnet.cluster import alloc, membership, registry
        from nsnet.kernel import open_netns, open_rtnl, req_new_bridge, req_set_link
        from nsnet.kernel.vxlan import VxlanSpec, overlay_mtu, req_new_vxlan

        self.world, self.host, self.network = world, host, network
        self.store = store or world.store(host)
        self.ns = open_netns(host.path)
        self.rt = open_rtnl(self.ns)
        self.mtu = overlay_mtu(UNDERLAY_MTU)
        self.bridge, self.vxlan = "br0", f"vx{network.vni}"
        self.rt.run([req_new_bridge(self.bridge, mtu=self.mtu)])
        br = self.rt.link(self.bridge).index
        eth0 = self.rt.link("eth0").index
        self.rt.run([req_new_vxlan(VxlanSpec(self.vxlan, network.vni, host.ip, eth0,
                                             mtu=self.mtu, master=br))])
        self.vx_index = self.rt.link(self.vxlan).index
        self.rt.run([req_set_link(index=self.vx_index, up=True)])
        self.lease = membership.join(self.store, host.name, host.ip, ttl=10)
        self.alloc = alloc.BlockAllocator(self.store, network, host.name)
        self.used: set[ipaddress.IPv4Address] = set()
        self.endpoints: dict[str, tuple[str, str]] = {}  # name -> (ns path, ip)
        self.records: dict = {}  # name -> EndpointRecord (to republish)
        self.applier = registry.VxlanApplier(self.rt, self.vx_index)
        self.applied: list = []
        self.watcher = registry.RegistryWatcher(self.store, network.name, host.name,
                                                self._apply, local_vtep=host.ip).start()
        self._stop = threading.Event()
        self.keeper = threading.Thread(target=self._keep_alive, daemon=True)
        self.keeper.start()

    def _keep_alive(self) -> None:
        """The agent's job (nsnet cluster agent): renew every TTL/3; after
        an expiry, register again and republish this host's endpoints."""
        from nsnet.cluster import membership, registry
        from nsnet.errors import StateError

        while not self._stop.wait(10 / 3):
            try:
                lease, renewed = membership.renew(self.store, self.host.name, self.lease,
                                                  self.host.ip)
                self.lease = lease
                if not renewed:
                    registry.publish_many(self.store, list(self.records.values()), lease)
            except StateError:  # no quorum for now: try again next round
                continue

    def _apply(self, desired) -> None:
        errors = self.applier.apply(desired)
        self.applied.append((time.monotonic(), desired, errors))

    def connect(self, name: str) -> str:
        """An endpoint namespace NAME on this host's bridge; returns its IP."""
        from nsnet.cluster import registry
        from nsnet.kernel import create_netns

        ip = str(self.alloc.allocate(self.used))  # the store first: may raise
        path = os.path.join(self.world.ns_dir, f"{self.host.name}-{name}")
        create_netns(self.world.ns_dir, f"{self.host.name}-{name}").close()
        port = f"v{name}"[:15]
        try:
            self.host.run("ip", "link", "add", port, "mtu", str(self.mtu), "master",
                          self.bridge, "type", "veth", "peer", "name", "eth0", "netns", path)
            self.host.run("ip", "link", "set", port, "up")
            inside = ["nsenter", f"--net={path}", "ip"]
            for argv in (["link", "set", "eth0", "address", mac_of(ip)],
                         ["addr", "add", f"{ip}/{self.network.subnet.prefixlen}", "dev", "eth0"],
                         ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
                subprocess.run([*inside, *argv], check=True, capture_output=True)
            rec = registry.EndpointRecord(self.network.name, self.host.name, name, ip,
                                          mac_of(ip), self.host.ip)
            registry.publish(self.store, rec, self.lease)
            self.records[name] = rec
        except BaseException:
            self.host.run("ip", "link", "del", port, check=False)
            self._drop_ns(path)
            raise
        self.used.add(ipaddress.IPv4Address(ip))
        self.endpoints[name] = (path, ip)
        return ip

    def _drop_ns(self, path: str) -> None:
        from nsnet.kernel.netns import umount

        with contextlib.suppress(OSError):
            umount(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def ping(self, name: str, ip: str, count: int = 1, wait: float = 2) -> bool:
        path = self.endpoints[name][0]
        proc = subprocess.run(["nsenter", f"--net={path}", "ping", "-c", str(count), "-W",
                               str(wait), "-i", "0.2", ip], capture_output=True, text=True)
        return proc.returncode == 0

    def links(self) -> set[str]:
        return {lk.name for lk in self.rt.links()}

    def fdb(self) -> set:
        from nsnet.kernel.vxlan import fdb_entries

        return fdb_entries(self.rt, self.vx_index)

    def close(self) -> None:
        self._stop.set()
        self.keeper.join(timeout=10)
        self.watcher.stop()
        self.store.close()
        self.rt.close()
        self.ns.close()

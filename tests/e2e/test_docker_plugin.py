"""Issue #19: the Docker remote network + IPAM driver at the protocol level.

The plugin runs as `nsnet docker-plugin` (a subprocess, host = the sandbox)
and is spoken to exactly as Docker's plugin client does: HTTP POST of JSON on
a unix socket.  Each endpoint is tried with what Docker sends, then with
malformed and unexpected requests, which must get a clear JSON error and
change nothing (kernel, nft, nsnet state, the plugin's own records).
The real dockerd is tests/runtime/test_docker.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

NET_ID = "a" * 64
EP_ID = "b" * 64
EP2_ID = "c" * 64
PORTMAP_KEY = "com.docker.network.portmap"


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


class Plugin:
    """`nsnet docker-plugin` in the sandbox, and a client for it."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.socket = str(Path(box.base) / "plugins" / "nsnet.sock")
        self.records = Path(box.state_dir) / "docker-plugin" / "state.json"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait for "listening" (after its recovery, if any)."""
        self.proc = subprocess.Popen([*self.box.cli_argv(), "docker-plugin", "--socket",
                                      self.socket], env=self.box.env(),
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        listening = threading.Event()

        def read(stream: Any) -> None:
            for line in stream:
                self.log.append(line)
                if "listening on" in line:
                    listening.set()

        threading.Thread(target=read, args=(self.proc.stderr,), daemon=True).start()
        deadline = time.monotonic() + 20
        while not listening.wait(0.1):
            assert self.proc.poll() is None, "".join(self.log)
            assert time.monotonic() < deadline, "the plugin did not start"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)

    def raw(self, method: str, body: bytes | None, verb: str = "POST") -> tuple[int, Any]:
        conn = _UnixHTTP(self.socket)
        try:
            conn.request(verb, f"/{method}", body=body, headers={
                "Accept": "application/vnd.docker.plugins.v1.2+json",
                "Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.getheader("Content-Type", "").startswith(
                "application/vnd.docker.plugins.v1")
            return resp.status, json.loads(data)
        finally:
            conn.close()

    def call(self, method: str, body: Any = None) -> tuple[int, Any]:
        return self.raw(method, None if body is None else json.dumps(body).encode())

    def ok(self, method: str, body: Any = None) -> dict:
        status, answer = self.call(method, body)
        assert status == 200 and not answer.get("Err") and not answer.get("Error"), answer
        return answer

    def err(self, method: str, body: Any = None, status: int = 200) -> str:
        got, answer = self.call(method, body)
        assert got == status, (got, answer)
        assert isinstance(answer.get("Err"), str) and answer["Err"], answer
        if method.startswith("IpamDriver."):
            assert answer["Error"] == answer["Err"]
        return answer["Err"]

    def state(self) -> dict:
        if not self.records.exists():
            return {"endpoints": {}, "networks": {}, "pools": {}}
        return json.loads(self.records.read_text())


@pytest.fixture
def plugin(sandbox):
    p = Plugin(sandbox)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _make_network(p: Plugin, subnet: str = "10.77.0.0/24", sub: str = "",
                  options: dict | None = None, net_id: str = NET_ID,
                  aux: dict | None = None) -> tuple[str, str]:
    pool = p.ok("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": subnet,
                                           "SubPool": sub, "Options": {}, "V6": False})
    gw = p.ok("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                            "Options": {"RequestAddressType":
                                                        "com.docker.network.gateway"}})
    p.ok("NetworkDriver.CreateNetwork", {
        "NetworkID": net_id, "Options": {"com.docker.network.enable_ipv6": False,
                                         "com.docker.network.generic": options or {}},
        "IPv4Data": [{"AddressSpace": "nsnet-local", "Pool": subnet,
                      "Gateway": gw["Address"], "AuxAddresses": aux or {}}], "IPv6Data": []})
    return pool["PoolID"], gw["Address"]


def _make_endpoint(p: Plugin, pool_id: str, ep_id: str = EP_ID) -> str:
    addr = p.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": {}})
    p.ok("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": ep_id, "Options": {},
        "Interface": {"Address": addr["Address"], "AddressIPv6": "", "MacAddress": ""}})
    return addr["Address"]


def _nsnet_networks(box) -> list[dict]:
    return json.loads(box.cli("network", "ls", "--json").stdout)


def test_handshake_and_capabilities(plugin) -> None:
    assert plugin.ok("Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert plugin.ok("NetworkDriver.GetCapabilities")["Scope"] == "local"
    assert plugin.ok("IpamDriver.GetCapabilities") == {"RequiresMACAddress": False,
                                                       "RequiresRequestReplay": False}
    spaces = plugin.ok("IpamDriver.GetDefaultAddressSpaces")
    assert spaces["LocalDefaultAddressSpace"] == "nsnet-local"
    # a health check with GET, as people do with curl --unix-socket
    assert plugin.raw("NetworkDriver.GetCapabilities", None, verb="GET")[0] == 200


def test_whole_lifecycle_leaves_nothing(sandbox, plugin) -> None:
    box = sandbox
    before = box.fingerprint()
    pool_id, gw = _make_network(plugin, "10.77.0.0/24", "10.77.0.128/25",
                                {"nsnet.name": "dnet", "com.docker.network.driver.mtu": "1400",
                                 "com.docker.network.bridge.enable_icc": "false"},
                                aux={"printer": "10.77.0.200/24"})
    assert gw == "10.77.0.1/24"
    [net] = [n for n in _nsnet_networks(box) if n["name"] == "dnet"]
    assert net["aux_addresses"] == {"printer": "10.77.0.200"}
    assert (net["subnet"], net["gateway"], net["ip_range"], net["mtu"], net["icc"]) == (
        "10.77.0.0/24", "10.77.0.1", "10.77.0.128/25", 1400, False)
    addr = _make_endpoint(plugin, pool_id)
    assert addr == "10.77.0.128/24"  # lowest of the --ip-range
    [ep] = _nsnet_networks(box)[0]["endpoints"]
    assert ep["address"] == addr and ep["netns"] == f"docker-{EP_ID[:12]}"
    # the container end waits in the host namespace for Docker to move it
    peer = box.host("ip", "-j", "link", "show", ep["ifname"]).stdout
    assert json.loads(peer)[0]["address"] == ep["mac"]
    joined = plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                              "SandboxKey": "/var/run/docker/netns/x",
                                              "Options": {}})
    assert joined == {"InterfaceName": {"SrcName": ep["ifname"], "DstPrefix": "eth"},
                      "Gateway": "10.77.0.1"}
    plugin.ok("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Options": {
            "com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080,
                 "HostPortEnd": 8080},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "", "HostPort": 0,
                 "HostPortEnd": 0}],
            "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}]}})
    ports = json.loads(box.cli("port", "ls", "--json").stdout)
    assert {(p["proto"], p["host_port"] if p["proto"] == "tcp" else "eph", p["port"])
            for p in ports} == {("tcp", 8080, 80), ("udp", "eph", 53)}
    low, high = (int(x) for x in box.host("cat", "/proc/sys/net/ipv4/ip_local_port_range")
                 .stdout.split())
    assert all(low <= p["host_port"] <= high for p in ports if p["proto"] == "udp")
    info = plugin.ok("NetworkDriver.EndpointOperInfo", {"NetworkID": NET_ID,
                                                        "EndpointID": EP_ID})["Value"]
    assert {b["HostPort"] for b in info["com.docker.network.portmap"]} == \
        {p["host_port"] for p in ports}
    plugin.ok("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NET_ID,
                                                           "EndpointID": EP_ID})
    assert json.loads(box.cli("port", "ls", "--json").stdout) == []
    plugin.ok("NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": EP_ID})
    plugin.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": EP_ID})
    plugin.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr})
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    plugin.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": gw})
    plugin.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})
    assert box.fingerprint() == before
    assert box.cli("reconcile", "--dry-run").returncode == 0
    assert plugin.state() == {"endpoints": {}, "networks": {}, "pools": {}}


def test_internal_network_has_no_gateway_route_and_no_ports(sandbox, plugin) -> None:
    pool_id, _ = _make_network(plugin, "10.78.0.0/24")
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    gw = "10.78.0.1/24"
    plugin.ok("NetworkDriver.CreateNetwork", {
        "NetworkID": NET_ID, "Options": {"com.docker.network.internal": True},
        "IPv4Data": [{"AddressSpace": "nsnet-local", "Pool": "10.78.0.0/24", "Gateway": gw}]})
    assert [n["internal"] for n in _nsnet_networks(sandbox)] == [True]
    _make_endpoint(plugin, pool_id)
    joined = plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                              "SandboxKey": "/x"})
    assert "Gateway" not in joined and joined["DisableGatewayService"] is True
    err = plugin.err("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostPort": 8081, "HostPortEnd": 8081}]}})
    assert "internal" in err


# ------------------------------------------------------------- bad input
MALFORMED = [
    # (method, body, expected status, words the error must contain)
    ("NetworkDriver.CreateNetwork", b"{not json", 400, "not JSON"),
    ("NetworkDriver.CreateNetwork", b"[1, 2]", 400, "JSON object"),
    ("NetworkDriver.Nonsense", b"{}", 404, "unknown method"),
    ("IpamDriver.RequestPool", b"\xff\xfe", 400, "not JSON"),
]

UNEXPECTED = [
    ("NetworkDriver.CreateNetwork", {}, "NetworkID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "../../etc"}, "NetworkID"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID}, "exactly one IPv4 subnet"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}, {"Pool": "10.80.0.0/24"}]}, "exactly one"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.7/24"}]}, "host bits"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}], "IPv6Data": [{"Pool": "10.80.0.0/24"}]},
     "not an IPv6 CIDR"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv6Data": [
        {"Pool": "fd00:79::/64"}, {"Pool": "fd00:80::/64"}]}, "one IPv6 subnet"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}], "IPv6Data": [{"Pool": "fd00:79::/64",
                                                 "Gateway": "10.79.0.1/24"}]}, "IPv6 address"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24", "Gateway": "10.80.0.1/24"}]}, "outside subnet"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}], "Options": {"com.docker.network.generic":
                                               {"bogus": "1"}}}, "unknown option -o bogus"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}], "Options": {"com.docker.network.generic":
                                               {"nsnet.mtu": "big"}}}, "number"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}], "Options": {"com.docker.network.internal": "yes"}},
     "true or false"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
        {"Pool": "10.79.0.0/24"}], "Options": []}, "Options"),
    ("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID}, "not an nsnet network"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP_ID},
     "not an nsnet network"),
    ("NetworkDriver.EndpointOperInfo", {"NetworkID": NET_ID, "EndpointID": EP_ID},
     "not an nsnet network"),
    ("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "/x"},
     "not an nsnet network"),
    ("NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": EP_ID},
     "not an nsnet network"),
    ("NetworkDriver.DeleteEndpoint", {"NetworkID": 7, "EndpointID": EP_ID}, "NetworkID"),
    ("NetworkDriver.ProgramExternalConnectivity", {"NetworkID": NET_ID, "EndpointID": EP_ID},
     "not an nsnet network"),
    ("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NET_ID, "EndpointID": EP_ID},
     "not an nsnet network"),
    ("NetworkDriver.DiscoverNew", {"DiscoveryType": "node"}, "DiscoveryType"),
    ("NetworkDriver.DiscoverDelete", {}, "DiscoveryType"),
    ("NetworkDriver.AllocateNetwork", {"NetworkID": NET_ID}, "swarm"),
    ("NetworkDriver.FreeNetwork", {"NetworkID": NET_ID}, "swarm"),
    ("IpamDriver.RequestPool", {"AddressSpace": "elsewhere", "Pool": "10.79.0.0/24"},
     "address space"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "10.79.0.0/24",
                                "V6": True}, "not an IPv6 CIDR"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "fd00:79::/64",
                                "V6": False}, "not an IPv4 CIDR"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "fd00:79::/127",
                                "V6": True}, "too small"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "banana"}, "CIDR"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "10.79.0.0/24",
                                "SubPool": "10.80.0.0/25"}, "not inside"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "10.79.0.0/31"},
     "too small"),
    ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": 5}, "CIDR"),
    ("IpamDriver.ReleasePool", {"PoolID": "nsnet-local/10.79.0.0/24"}, "not an nsnet pool"),
    ("IpamDriver.RequestAddress", {"PoolID": None}, "not an nsnet pool"),
    ("IpamDriver.ReleaseAddress", {"PoolID": "x", "Address": "10.79.0.2/24"},
     "not an nsnet pool"),
]


@pytest.mark.parametrize(("method", "body", "status", "words"), MALFORMED)
def test_undecodable_requests_get_an_http_error_with_err(plugin, method: str, body: bytes,
                                                         status: int, words: str) -> None:
    state = plugin.state()
    got, answer = plugin.raw(method, body)
    assert got == status and words in answer["Err"], answer
    assert plugin.state() == state


def test_unexpected_requests_get_err_and_change_nothing(sandbox, plugin) -> None:
    before = sandbox.fingerprint()
    state = plugin.state()
    for method, body, words in UNEXPECTED:
        assert words in plugin.err(method, body), (method, body)
    assert sandbox.fingerprint() == before
    assert plugin.state() == state


def test_unexpected_requests_on_a_live_network_change_nothing(sandbox, plugin) -> None:
    pool_id, _ = _make_network(plugin, "10.81.0.0/24")
    addr = _make_endpoint(plugin, pool_id)
    before, state = sandbox.fingerprint(), plugin.state()
    ep = {"NetworkID": NET_ID, "EndpointID": EP_ID}
    bad = [
        ("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID, "IPv4Data": [
            {"Pool": "10.81.0.0/24"}]}, "already exists"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": "d" * 64, "IPv4Data": [
            {"Pool": "10.81.0.0/25"}]}, "overlaps"),
        ("NetworkDriver.CreateEndpoint", {**ep, "Interface": {"Address": addr}},
         "already exists"),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                          "Interface": {"Address": addr}}, "in use"),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                          "Interface": {"Address": "10.99.0.5/24"}},
         "outside subnet"),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                          "Interface": {"AddressIPv6": "fd00::2/64"}},
         "IPv6"),  # an IPv4-only network has no IPv6 address to give
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                          "Interface": {"AddressIPv6": "10.81.0.9/24"}},
         "not an IPv6 address"),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                          "Interface": {"MacAddress": "zz"}}, "MAC"),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                          "Interface": "eth0"}, "object"),
        ("NetworkDriver.Join", {**ep, "SandboxKey": ""}, "SandboxKey"),
        ("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP2_ID,
                                "SandboxKey": "/x"}, "does not exist"),
        ("NetworkDriver.Leave", ep, "not joined"),
        ("NetworkDriver.ProgramExternalConnectivity", {**ep, "Options": {
            "com.docker.network.portmap": [{"Proto": 132, "Port": 80, "HostPort": 80}]}},
         "not supported"),
        ("NetworkDriver.ProgramExternalConnectivity", {**ep, "Options": {
            "com.docker.network.portmap": [{"Proto": 6, "Port": 0, "HostPort": 80}]}},
         "bad port"),
        ("NetworkDriver.ProgramExternalConnectivity", {**ep, "Options": {
            "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 70000}]}},
         "bad port"),
        ("NetworkDriver.ProgramExternalConnectivity", {**ep, "Options": {
            "com.docker.network.portmap": "8080:80"}}, "list"),
        ("NetworkDriver.ProgramExternalConnectivity", {**ep, "Options": {
            "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8080,
                                            "HostIP": "192.0.2.9"}]}},
         "not an address of the host"),
        ("NetworkDriver.ProgramExternalConnectivity", {**ep, "Options": {
            "com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8080},
                                           {"Proto": 6, "Port": 81, "HostPort": 8080}]}},
         "8080/tcp"),
        ("NetworkDriver.DeleteNetwork", {"NetworkID": "e" * 64}, "not an nsnet network"),
        ("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "10.81.0.0/16"},
         "overlaps"),
        ("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": addr}, "in use"),
        ("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "10.81.0.255"},
         "not a host address"),
        ("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "not-an-ip"},
         "not an IP"),
        ("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": "10.81.0.77/24"},
         "not allocated"),
    ]
    for method, body, words in bad:
        assert words in plugin.err(method, body), (method, body)
    assert sandbox.fingerprint() == before
    assert plugin.state() == state
    # and the legitimate path still works after all that
    plugin.ok("NetworkDriver.Join", {**ep, "SandboxKey": "/x"})
    plugin.ok("NetworkDriver.Leave", ep)
    plugin.ok("NetworkDriver.DeleteEndpoint", ep)
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})


def test_a_network_with_foreign_endpoints_is_not_deleted_under_them(sandbox, plugin) -> None:
    """nsnet endpoints connected from nsnet's CLI to a Docker network are
    never removed by `docker network rm`, and IPAM never hands out their
    addresses."""
    pool_id, _ = _make_network(plugin, "10.82.0.0/24", options={"nsnet.name": "mixed"})
    ns = sandbox.name("m")
    assert sandbox.cli("connect", "mixed", ns, "--create").returncode == 0
    nsnet_ip = _nsnet_networks(sandbox)[0]["endpoints"][0]["address"]
    addr = plugin.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ""})["Address"]
    assert addr != nsnet_ip
    assert "outside Docker" in plugin.err("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    assert [n["name"] for n in _nsnet_networks(sandbox)] == ["mixed"]
    assert sandbox.cli("ns", "rm", ns).returncode == 0
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    assert _nsnet_networks(sandbox) == []


def test_killed_plugin_restarts_with_its_records(sandbox, plugin) -> None:
    pool_id, _ = _make_network(plugin, "10.83.0.0/24")
    addr = _make_endpoint(plugin, pool_id)
    plugin.stop(signal.SIGKILL)
    plugin.start()  # the stale socket is replaced
    joined = plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                              "SandboxKey": "/x"})
    assert joined["Gateway"] == "10.83.0.1"
    second = plugin.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ""})
    assert second["Address"] != addr  # the IPAM remembers what Docker holds
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0


def test_a_request_cut_short_by_a_kill_is_rolled_back(sandbox, plugin) -> None:
    """Docker saw the request fail, so a creation found half-done is undone
    on restart and a deletion is finished."""
    pool_id, _ = _make_network(plugin, "10.84.0.0/24")
    _make_endpoint(plugin, pool_id)
    plugin.stop(signal.SIGKILL)
    records = plugin.state()
    records["endpoints"][EP_ID]["phase"] = "creating"  # as if killed inside CreateEndpoint
    plugin.records.write_text(json.dumps(records))
    plugin.start()
    assert _nsnet_networks(sandbox)[0]["endpoints"] == []
    assert EP_ID not in plugin.state()["endpoints"]
    plugin.stop(signal.SIGKILL)
    records = plugin.state()
    records["networks"][NET_ID]["phase"] = "deleting"  # killed inside DeleteNetwork
    plugin.records.write_text(json.dumps(records))
    plugin.start()
    assert _nsnet_networks(sandbox) == []
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0


def test_released_by_reconcile_then_deleted_by_docker(sandbox, plugin) -> None:
    """The container's namespace died with dockerd: the veth pair is gone,
    reconcile releases the endpoint, Docker's own cleanup then succeeds."""
    pool_id, _ = _make_network(plugin, "10.85.0.0/24")
    _make_endpoint(plugin, pool_id)
    [ep] = _nsnet_networks(sandbox)[0]["endpoints"]
    sandbox.host("ip", "link", "del", ep["host_ifname"])
    assert sandbox.cli("reconcile", "--dry-run").returncode == 1
    assert sandbox.cli("reconcile").returncode == 0
    assert sandbox.cli("reconcile", "--dry-run").returncode == 0
    plugin.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": EP_ID})
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    assert sandbox.cli("ns", "ls", "--json").stdout.strip() in ("[]", "")


def test_second_plugin_on_the_same_state_is_refused(sandbox, plugin) -> None:
    other = subprocess.run([*sandbox.cli_argv(), "docker-plugin", "--socket",
                            str(Path(sandbox.base) / "other.sock")], env=sandbox.env(),
                           capture_output=True, text=True, timeout=30)
    assert other.returncode != 0 and "another nsnet Docker plugin" in other.stderr
    assert not (Path(sandbox.base) / "other.sock").exists()


def test_docker_cannot_take_over_what_is_not_its_own(sandbox, plugin) -> None:
    """A Docker network never adopts an existing nsnet network (by name) or a
    link it did not make (by bridge name); the socket is root's only."""
    st = os.stat(plugin.socket)
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0  # no one but root may connect
    mine = sandbox.name("own")
    assert sandbox.cli("network", "create", mine, "--subnet", "10.86.0.0/24").returncode == 0
    sandbox.host("ip", "link", "add", "vx-a", "type", "veth", "peer", "name", "vx-b")
    before, state = sandbox.fingerprint(), plugin.state()
    for options, words in (({"nsnet.name": mine}, "already exists"),
                           ({"nsnet.bridge": "vx-a"}, "not created by nsnet")):
        err = plugin.err("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.generic": options},
            "IPv4Data": [{"Pool": "10.87.0.0/24"}]})
        assert words in err
    err = plugin.err("NetworkDriver.CreateNetwork", {"NetworkID": NET_ID,
                                                     "IPv4Data": [{"Pool": "10.86.0.0/25"}]})
    assert "overlaps" in err
    assert sandbox.fingerprint() == before and plugin.state() == state
    sandbox.host("ip", "link", "del", "vx-a")


# ------------------------------------------------- options of the README table
def test_bridge_masquerade_dns_options_reach_the_network(sandbox, plugin) -> None:
    """`-o com.docker.network.bridge.name`, `enable_ip_masquerade`, `nsnet.dns`,
    `nsnet.dns_servers` (and nsnet's own spellings) become the network's."""
    box = sandbox
    bridge = box.name("dbr")
    _make_network(plugin, "10.88.0.0/24", options={
        "nsnet.name": "optnet", "com.docker.network.bridge.name": bridge,
        "com.docker.network.bridge.enable_ip_masquerade": "false",
        "nsnet.dns": "true", "nsnet.dns_servers": "198.51.100.53,203.0.113.53"})
    [net] = json.loads(box.cli("network", "inspect", "optnet").stdout)
    assert (net["bridge"], net["masquerade"], net["dns"], net["dns_servers"]) == (
        bridge, False, True, ["198.51.100.53", "203.0.113.53"]), net
    # the kernel has that bridge, and no NAT for the subnet
    assert json.loads(box.host("ip", "-j", "link", "show", bridge).stdout)[0]["ifname"] == bridge
    no_nat = _outbound_nat(box, "10.88.0.0/24")
    assert no_nat == [], no_nat
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    assert box.host("ip", "link", "show", bridge, check=False).returncode != 0
    # nsnet's spellings, the other way round
    _make_network(plugin, "10.88.1.0/24", options={
        "nsnet.name": "optnet2", "nsnet.bridge": bridge, "nsnet.masquerade": "true",
        "nsnet.dns": "false"}, net_id="d" * 64)
    [net] = json.loads(box.cli("network", "inspect", "optnet2").stdout)
    assert (net["bridge"], net["masquerade"], net["dns"], net["dns_servers"]) == (
        bridge, True, False, []), net
    assert _outbound_nat(box, "10.88.1.0/24") != []  # so the check above can fail
    plugin.ok("NetworkDriver.DeleteNetwork", {"NetworkID": "d" * 64})


def _outbound_nat(box, subnet: str) -> list[str]:
    """Masquerade rules for traffic from SUBNET other than the hairpin of
    published ports (ct status dnat), which every network has."""
    ruleset = box.host("nft", "list", "ruleset").stdout
    return [line.strip() for line in ruleset.splitlines()
            if subnet in line and "masquerade" in line and "ct status dnat" not in line]


def test_mac_address_and_host_ip_binding_are_kept(sandbox, plugin) -> None:
    """`docker run --mac-address` (CreateEndpoint with a MacAddress) and
    `-p IP:HOST:CTR` (a binding with a HostIP)."""
    box = sandbox
    pool_id, _ = _make_network(plugin, "10.89.0.0/24", options={"nsnet.name": "macnet"})
    addr = plugin.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "",
                                                   "Options": {}})["Address"]
    answer = plugin.ok("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Options": {},
        "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": "02:42:0a:59:00:77"}})
    assert answer == {}  # Docker rejects an answer that changes what it gave
    [ep] = json.loads(box.cli("network", "inspect", "macnet").stdout)[0]["endpoints"]
    assert ep["mac"] == "02:42:0a:59:00:77"
    link = json.loads(box.host("ip", "-j", "link", "show", ep["ifname"]).stdout)[0]
    assert link["address"] == "02:42:0a:59:00:77"  # the kernel's, not only the record's
    plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "SandboxKey": "/x", "Options": {}})
    plugin.ok("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Options": {PORTMAP_KEY: [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 8088,
             "HostPortEnd": 8088}]}})
    ports = json.loads(box.cli("port", "ls", "--json").stdout)
    assert [(p["host_ip"], p["host_port"], p["port"], p["proto"]) for p in ports] == [
        ("127.0.0.1", 8088, 80, "tcp")], ports
    info = plugin.ok("NetworkDriver.EndpointOperInfo", {"NetworkID": NET_ID,
                                                        "EndpointID": EP_ID})["Value"]
    assert [(b["HostIP"], b["HostPort"]) for b in info[PORTMAP_KEY]] == [("127.0.0.1", 8088)]
    # a MAC that is not one is refused, and makes nothing
    before = box.fingerprint()
    err = plugin.err("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": EP2_ID, "Options": {},
        "Interface": {"Address": "", "AddressIPv6": "", "MacAddress": "not-a-mac"}})
    assert "mac" in err.lower()
    assert box.fingerprint() == before and EP2_ID not in plugin.state()["endpoints"]


def test_check_skips_handed_off_endpoints(sandbox, plugin) -> None:
    """`nsnet check` probes the endpoints nsnet connected and skips the one
    handed off to Docker (its container end never left the host here)."""
    box = sandbox
    pool_id, _ = _make_network(plugin, "10.90.0.0/24", options={"nsnet.name": "mixchk"})
    docker_addr = _make_endpoint(plugin, pool_id)
    plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                     "SandboxKey": "/x", "Options": {}})
    a, b = box.name("ca"), box.name("cb")
    assert box.cli("connect", "mixchk", a, b, "--create").returncode == 0
    res = box.cli("check", "mixchk", "--json")
    assert res.returncode == 0, (res.stdout, res.stderr)
    handed = f"docker-{EP_ID[:12]}"
    assert handed not in res.stdout and docker_addr.split("/")[0] not in res.stdout, res.stdout
    [result] = json.loads(res.stdout)
    pairs = {(p["from"], p["to"]): p["ok"] for p in result["pairs"]}
    assert result["ok"] is True and pairs == {(a, b): True, (b, a): True}, result
    # the table form too: two endpoints, two probes, none of them Docker's
    table = box.cli("check", "mixchk")
    assert table.returncode == 0 and "between 2 endpoints" in table.stdout, table.stdout
    assert handed not in table.stdout and "(2/2 received)" in table.stdout, table.stdout
    assert box.cli("ns", "rm", a, b).returncode == 0


# ------------------------------------------------------ IPv6 (issue #16)
def _pool(p: Plugin, subnet: str, v6: bool) -> tuple[str, str, str]:
    """RequestPool and the gateway's RequestAddress, as libnetwork does per family."""
    pool = p.ok("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": subnet,
                                           "SubPool": "", "Options": {}, "V6": v6})
    gw = p.ok("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                            "Options": {"RequestAddressType":
                                                        "com.docker.network.gateway"}})
    return pool["PoolID"], pool["Pool"], gw["Address"]


def _delete_all(p: Plugin, ep_ids: list[str], held: list[tuple[str, str]],
                pools: list[str]) -> None:
    for ep_id in ep_ids:
        p.ok("NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": ep_id})
        p.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": ep_id})
    p.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    for pool_id, addr in held:
        p.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr})
    for pool_id in pools:
        p.ok("IpamDriver.ReleasePool", {"PoolID": pool_id})


def test_dual_stack_network_lifecycle_leaves_nothing(sandbox, plugin) -> None:
    """`docker network create -d nsnet --ipam-driver nsnet --ipv6 --subnet
    10.92.0.0/24 --subnet fd00:92::/64`: both pools, both addresses, both
    gateways at Join, `-p 8080:80` published for both families."""
    box = sandbox
    before = box.fingerprint()
    pool4, _, gw4 = _pool(plugin, "10.92.0.0/24", False)
    pool6, subnet6, gw6 = _pool(plugin, "fd00:92::/64", True)
    assert (subnet6, gw6) == ("fd00:92::/64", "fd00:92::1/64")
    plugin.ok("NetworkDriver.CreateNetwork", {
        "NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": True,
                                         "com.docker.network.generic": {"nsnet.name": "dual"}},
        "IPv4Data": [{"AddressSpace": "nsnet-local", "Pool": "10.92.0.0/24", "Gateway": gw4}],
        "IPv6Data": [{"AddressSpace": "nsnet-local", "Pool": "fd00:92::/64", "Gateway": gw6}]})
    [net] = _nsnet_networks(box)
    assert (net["subnet"], net["gateway"], net["subnet6"], net["gateway6"]) == (
        "10.92.0.0/24", "10.92.0.1", "fd00:92::/64", "fd00:92::1"), net
    a4 = plugin.ok("IpamDriver.RequestAddress", {"PoolID": pool4, "Address": ""})["Address"]
    a6 = plugin.ok("IpamDriver.RequestAddress", {"PoolID": pool6, "Address": ""})["Address"]
    assert (a4, a6) == ("10.92.0.2/24", "fd00:92::2/64")
    # Docker's --ip6: the address it asks for is the one the endpoint gets
    b6 = plugin.ok("IpamDriver.RequestAddress", {"PoolID": pool6,
                                                 "Address": "fd00:92::99"})["Address"]
    assert b6 == "fd00:92::99/64"
    assert plugin.ok("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Options": {},
        "Interface": {"Address": a4, "AddressIPv6": b6, "MacAddress": ""}}).get(
            "Interface", {}).keys() == {"MacAddress"}
    [ep] = _nsnet_networks(box)[0]["endpoints"]
    assert (ep["address"], ep["address6"]) == (a4, b6)
    # an address Docker's IPAM did not give is still checked against nsnet's
    assert "in use" in plugin.err("IpamDriver.RequestAddress",
                                  {"PoolID": pool6, "Address": "fd00:92::1"})
    joined = plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                              "SandboxKey": "/x", "Options": {}})
    assert (joined["Gateway"], joined["GatewayIPv6"]) == ("10.92.0.1", "fd00:92::1")
    plugin.ok("NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Options": {PORTMAP_KEY: [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080,
             "HostPortEnd": 8080},
            {"Proto": 6, "IP": "", "Port": 81, "HostIP": "::", "HostPort": 8081,
             "HostPortEnd": 8081}]}})
    ports = {(p["host_ip"], p["host_port"]) for p in
             json.loads(box.cli("port", "ls", "--json").stdout)}
    assert ports == {("0.0.0.0", 8080), ("::", 8081)}, ports  # 0.0.0.0: both families
    # nsnet's rules publish both families: the v6 ones in the ip6 table
    ruleset6 = box.host("nft", "list", "table", "ip6", "nsnet").stdout
    assert "8080" in ruleset6 and "8081" in ruleset6 and "fd00:92::99" in ruleset6
    plugin.ok("NetworkDriver.RevokeExternalConnectivity", {"NetworkID": NET_ID,
                                                           "EndpointID": EP_ID})
    _delete_all(plugin, [EP_ID], [(pool4, a4), (pool6, a6), (pool6, b6), (pool4, gw4),
                                  (pool6, gw6)], [pool4, pool6])
    assert box.fingerprint() == before
    assert box.cli("reconcile", "--dry-run").returncode == 0
    assert plugin.state() == {"endpoints": {}, "networks": {}, "pools": {}}


def test_ipv6_without_a_subnet_gets_a_ula_64(sandbox, plugin) -> None:
    """`--ipv6` alone: nsnet's IPAM picks a /64 of the host's unique-local
    prefix, the one `nsnet network create --ipv6` would, never a taken one."""
    first = plugin.ok("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "",
                                                 "V6": True})
    second = plugin.ok("IpamDriver.RequestPool", {"AddressSpace": "nsnet-local", "Pool": "",
                                                  "V6": True})
    import ipaddress

    nets = [ipaddress.ip_network(a["Pool"]) for a in (first, second)]
    assert all(n.prefixlen == 64 and n.subnet_of(ipaddress.ip_network("fd00::/8"))
               for n in nets), nets
    assert nets[0] != nets[1] and nets[0].supernet(16) == nets[1].supernet(16)
    for pool in (first, second):
        plugin.ok("IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})


def test_ipv6_only_network_as_docker_28_sends_it(sandbox, plugin) -> None:
    """`docker network create --ipv4=false --ipv6` (Docker 28): no IPv4Data,
    enable_ipv4 false; the endpoint has an IPv6 address and gateway only."""
    box = sandbox
    before = box.fingerprint()
    pool6, _, gw6 = _pool(plugin, "fd00:93::/64", True)
    plugin.ok("NetworkDriver.CreateNetwork", {
        "NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": True,
                                         "com.docker.network.enable_ipv4": False},
        "IPv4Data": [], "IPv6Data": [{"Pool": "fd00:93::/64", "Gateway": gw6}]})
    [net] = _nsnet_networks(box)
    assert (net["subnet"], net["subnet6"]) == ("", "fd00:93::/64"), net
    answer = plugin.ok("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {}})["Interface"]
    assert answer["AddressIPv6"] == "fd00:93::2/64" and "Address" not in answer
    joined = plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                              "SandboxKey": "/x"})
    assert joined["GatewayIPv6"] == "fd00:93::1" and "Gateway" not in joined
    _delete_all(plugin, [EP_ID], [(pool6, gw6)], [pool6])
    assert box.fingerprint() == before
    assert plugin.state() == {"endpoints": {}, "networks": {}, "pools": {}}


def test_dual_stack_with_dockers_default_ipam(sandbox, plugin) -> None:
    """`--ipam-driver default`: Docker's own IPAM gives pools and addresses;
    nsnet takes them as given (no sub-pool, no answer that changes them)."""
    box = sandbox
    plugin.ok("NetworkDriver.CreateNetwork", {
        "NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": True},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.94.0.0/24",
                      "Gateway": "10.94.0.1/24"}],
        "IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": "fd00:94::/64",
                      "Gateway": "fd00:94::1/64"}]})
    answer = plugin.ok("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET_ID, "EndpointID": EP_ID,
        "Interface": {"Address": "10.94.0.2/24", "AddressIPv6": "fd00:94::2/64",
                      "MacAddress": "02:42:0a:5e:00:02"}})
    assert answer == {}
    [ep] = _nsnet_networks(box)[0]["endpoints"]
    assert (ep["address"], ep["address6"]) == ("10.94.0.2/24", "fd00:94::2/64")
    joined = plugin.ok("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                              "SandboxKey": "/x"})
    assert (joined["Gateway"], joined["GatewayIPv6"]) == ("10.94.0.1", "fd00:94::1")
    _delete_all(plugin, [EP_ID], [], [])
    assert _nsnet_networks(box) == []

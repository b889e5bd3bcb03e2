"""One benchmark run: set up N endpoints with one method, verify, tear down.

Runs inside its own sandbox (``unshare --mount --net`` with a tmpfs on /run,
started by :mod:`bench.setup`), so the machine's namespace is never touched
and everything vanishes with the process.  Prints one JSON line.

Addresses come from 198.18.0.0/15, the range reserved for benchmarks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from .common import sh, stop_daemons

try:  # imported up front so no method pays it inside its timed section
    from nsnet import kernel as _kernel
except ImportError:  # the baselines run without nsnet installed
    _kernel = None

BRIDGE = "bench0"
SUBNET = "198.18.0.0/16"
GATEWAY = "198.18.0.1"
CNI_BIN = "/usr/lib/cni"
STATE = "/run/nsnet-state"
ETC = "/run/nsnet-etc"  # resolv.conf files: on the sandbox's tmpfs, never /etc


def addr(i: int) -> str:
    return str(ipaddress.ip_address(GATEWAY) + i)


def names(n: int) -> list[str]:
    return [f"ns{i}" for i in range(1, n + 1)]


def make_bridge() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{GATEWAY}/16", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")


# ---------------------------------------------------------------- article
def article_setup(n: int) -> None:
    """The article's commands, one process per step, as a shell script."""
    lines = ["set -e"]
    for i in range(1, n + 1):
        ex = f"ip netns exec ns{i}"
        lines += [f"ip netns add ns{i}", f"ip link add veth{i} type veth peer name veth{i}p",
                  f"brctl addif {BRIDGE} veth{i}", f"ip link set veth{i} up",
                  f"ip link set veth{i}p netns ns{i}", f"{ex} ip link set veth{i}p name eth0",
                  f"{ex} ip link set eth0 up", f"{ex} ip link set lo up",
                  f"{ex} ip addr add {addr(i)}/16 dev eth0",
                  f"{ex} ip route add default via {GATEWAY}"]
    sh("bash", "-s", stdin="\n".join(lines) + "\n")  # a script, not an argument: ARG_MAX


def article_teardown(n: int) -> None:
    sh("bash", "-s", stdin="set -e\n" + "".join(f"ip link del veth{i}\nip netns del ns{i}\n"
                                                 for i in range(1, n + 1)))


# -------------------------------------------------------------------- cni
def _cni_conf() -> str:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": BRIDGE,
        "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": SUBNET, "gateway": GATEWAY,
                 "dataDir": "/run/cni-ipam", "routes": [{"dst": "0.0.0.0/0"}]}})


def _cni(command: str, i: int) -> None:
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=f"bench{i}",
               CNI_NETNS=f"/run/netns/ns{i}", CNI_IFNAME="eth0", CNI_PATH=CNI_BIN)
    sh(f"{CNI_BIN}/bridge", stdin=_cni_conf(), env=env)


def cni_setup(n: int) -> None:
    """The reference bridge + host-local plugins, exec'd per endpoint."""
    for i in range(1, n + 1):
        sh("ip", "netns", "add", f"ns{i}")
        sh("ip", "-n", f"ns{i}", "link", "set", "lo", "up")
        _cni("ADD", i)


def cni_teardown(n: int) -> None:
    for i in range(1, n + 1):
        _cni("DEL", i)
        sh("ip", "netns", "del", f"ns{i}")


# --------------------------------------------------------------- ip -batch
def ipbatch_setup(n: int) -> None:
    """The best iproute2 can do: one batch for the host side (peer created
    inside the netns), one ``nsenter --net ip -batch`` per namespace."""
    host = [f"netns add ns{i}" for i in range(1, n + 1)]
    host += [f"link add veth{i} master {BRIDGE} up type veth peer name eth0 netns ns{i}"
             for i in range(1, n + 1)]
    sh("ip", "-batch", "-", stdin="\n".join(host) + "\n")
    for i in range(1, n + 1):
        inside = ["link set lo up", "link set eth0 up", f"addr add {addr(i)}/16 dev eth0",
                  f"route add default via {GATEWAY}"]
        sh("nsenter", f"--net=/run/netns/ns{i}", "ip", "-batch", "-",
           stdin="\n".join(inside) + "\n")


def netns_del_batch(n: int) -> None:
    sh("ip", "-batch", "-", stdin="".join(f"netns del ns{i}\n" for i in range(1, n + 1)))


# ------------------------------------------------------------------ floor
def floor_setup(n: int) -> None:
    """Kernel-pieces floor: bare netns creation + bare veth creation, batched."""
    lines = [f"netns add ns{i}" for i in range(1, n + 1)]
    lines += [f"link add veth{i} type veth peer name eth0 netns ns{i}" for i in range(1, n + 1)]
    sh("ip", "-batch", "-", stdin="\n".join(lines) + "\n")


def floor_configured_setup(n: int) -> None:
    """The configured floor: the very kernel requests nsnet makes for N
    endpoints (same batching, IPv6 off at birth), through nsnet's kernel
    layer, with no state, IPAM, journal or validation.  The gap between this
    and the bare floor is kernel work the endpoints need; the gap between
    nsnet and this is nsnet's own overhead."""
    import resource

    k = _kernel

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rt = k.open_rtnl(k.current_netns())
    bridge = rt.link(BRIDGE).index
    k.ensure_netns_dir("/run/netns")
    handles = [k.create_netns("/run/netns", name, {"net/ipv6/conf/default/disable_ipv6": "1"})
               for name in names(n)]
    rt.run([k.req_new_veth(k.VethSpec(f"veth{i}", "eth0", h.fd, master=bridge))
            for i, h in enumerate(handles, 1)])
    rt.run([k.req_set_link(f"veth{i}", up=True) for i in range(1, n + 1)])
    for i, h in enumerate(handles, 1):
        with k.open_rtnl(h) as inner:
            idx = inner.link("eth0").index
            inner.run([k.req_set_link("lo", up=True), k.req_set_link(index=idx, up=True),
                       k.req_add_addr(idx, f"{addr(i)}/16"),
                       k.req_add_route("default", GATEWAY, oif=idx)])
        h.close()


# ------------------------------------------------------------------ nsnet
def _nsnet_cmd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "nsnet")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "nsnet.cli"]


def _nsnet_env() -> dict[str, str]:
    return dict(os.environ, NSNET_STATE_DIR=STATE, NSNET_ETC_NETNS_DIR=ETC)


def nsnet_prepare() -> None:
    sh(*_nsnet_cmd(), "network", "create", "bench", "--subnet", SUBNET, "--gateway", GATEWAY,
       "--bridge", BRIDGE, env=_nsnet_env())


def nsnet_dual_prepare() -> None:
    """The same network, dual-stack (#16): every endpoint gets an IPv6
    address and ::/0 route as well, IPv6 on quietly."""
    sh(*_nsnet_cmd(), "network", "create", "bench", "--subnet", SUBNET, "--gateway", GATEWAY,
       "--subnet", "fd00:be::/64", "--bridge", BRIDGE, env=_nsnet_env())


def nsnet_cli_setup(n: int) -> None:
    sh(*_nsnet_cmd(), "connect", "bench", *names(n), "--create", env=_nsnet_env())


def nsnet_cli_teardown(n: int) -> None:
    sh(*_nsnet_cmd(), "ns", "rm", *names(n), env=_nsnet_env())


_engine = None


def _api():
    global _engine
    if _engine is None:
        from nsnet import Engine

        _engine = Engine.open(state_dir=STATE, etc_netns_dir=ETC)
    return _engine


def nsnet_api_setup(n: int) -> None:
    from nsnet import ConnectOptions

    _api().connect("bench", names(n), ConnectOptions(create=True))


def nsnet_api_teardown(n: int) -> None:
    _api().ns_rm(names(n))


# ----------------------------------------------------------------- verify
def bridge_ports() -> int:
    return len(json.loads(sh("ip", "-j", "link", "show", "master", BRIDGE) or "[]"))


def wait_ports_gone(limit: float = 120.0) -> None:
    """Namespace removal frees veths asynchronously: teardown ends when the
    host side is really empty, for every method alike."""
    end = time.monotonic() + limit
    while bridge_ports() and time.monotonic() < end:
        time.sleep(0.005)


def verify(n: int, with_addresses: bool) -> str:
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    if len(netns) != n:
        return f"{len(netns)} namespaces instead of {n}"
    if bridge_ports() != n:
        return f"{bridge_ports()} bridge ports instead of {n}"
    if with_addresses:
        for i in sorted({1, (n + 1) // 2, n}):
            res = subprocess.run(["nsenter", f"--net=/run/netns/ns{i}", "ping", "-c", "1",
                                  "-W", "2", GATEWAY], capture_output=True)
            if res.returncode:
                return f"ns{i} cannot ping the gateway"
    return ""


Method = tuple[Callable[[], None] | None, Callable[[int], None], Callable[[int], None], bool]
METHODS: dict[str, Method] = {
    # name: (untimed preparation, setup, teardown, configures addresses)
    "article": (make_bridge, article_setup, article_teardown, True),
    "cni": (None, cni_setup, cni_teardown, True),
    "ip-batch": (make_bridge, ipbatch_setup, netns_del_batch, True),
    "floor": (None, floor_setup, netns_del_batch, False),
    "floor-configured": (make_bridge, floor_configured_setup, netns_del_batch, True),
    "nsnet-cli": (nsnet_prepare, nsnet_cli_setup, nsnet_cli_teardown, True),
    "nsnet-api": (nsnet_prepare, nsnet_api_setup, nsnet_api_teardown, True),
    "nsnet-dual": (nsnet_dual_prepare, nsnet_api_setup, nsnet_api_teardown, True),
}


def run(method: str, n: int) -> dict[str, object]:
    prepare, setup, teardown, addresses = METHODS[method]
    sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    sh("ip", "link", "set", "lo", "up")
    if prepare:
        prepare()
    t0 = time.perf_counter()
    setup(n)
    t_setup = time.perf_counter() - t0
    floor = method == "floor"  # bare veths, not enslaved: counted as veths
    problem = _verify_floor(n) if floor else verify(n, addresses)
    t0 = time.perf_counter()
    teardown(n)
    if floor:
        _wait_veths_gone()
    else:
        wait_ports_gone()
    t_down = time.perf_counter() - t0
    return {"method": method, "n": n, "setup": t_setup, "teardown": t_down,
            "ok": not problem, "problem": problem}


def _host_veths() -> int:
    return sum(1 for lk in json.loads(sh("ip", "-j", "link", "show", "type", "veth") or "[]"))


def _verify_floor(n: int) -> str:
    return "" if _host_veths() == n else f"{_host_veths()} veths instead of {n}"


def _wait_veths_gone(limit: float = 120.0) -> None:
    end = time.monotonic() + limit
    while _host_veths() and time.monotonic() < end:
        time.sleep(0.005)


def main() -> None:
    method, n = sys.argv[1], int(sys.argv[2])
    if method == "cni" and not shutil.which("bridge", path=CNI_BIN):
        print(json.dumps({"method": method, "n": n, "ok": False,
                          "problem": f"no CNI plugins in {CNI_BIN}"}))
        return
    try:
        try:
            print(json.dumps(run(method, n)))
        finally:
            stop_daemons(STATE)
    except Exception as exc:  # reported, not raised: the driver prints the table
        print(json.dumps({"method": method, "n": n, "ok": False, "problem": str(exc)}))


if __name__ == "__main__":
    main()

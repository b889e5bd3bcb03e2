"""IPv6 data plane (#16): iperf3 between two endpoints of one nsnet network
against the same two namespaces on a hand-built bridge, in one run.

    python -m bench.ipv6_dataplane [RUNS] [SECONDS]   (as root; defaults 3 5;
                                                       results: bench/results/ipv6.md)

One sandbox (tests/conftest.py's: a throwaway "host" namespace, its own
netns and state directories).  nsnet creates a dual-stack network
(10.230.0.0/24 + fd00:230::/64) and connects namespaces ``a`` and ``b``.
The baseline is built by hand into the very same namespaces, with ip(8):

* in the sandbox host namespace a bridge ``hb0`` (no addresses, MTU of the
  nsnet endpoint's interface), up;
* in each of ``a`` and ``b`` a second veth pair ``hb`` <-> ``hba``/``hbb``,
  the outer end moved to the host namespace and enslaved to ``hb0``, both
  ends at the same MTU, up;
* ``hb`` gets nsnet's endpoint IPv6 sysctls (no RA, no autoconf, no DAD, no
  link-local address; ``hb0`` has IPv6 off: a plain L2 bridge) and
  fd00:99::1/64 (a) and fd00:99::2/64 (b) with ``nodad`` (nsnet
  also sets its addresses without DAD), plus 172.31.0.1-2/24 for the IPv4
  reference -- the on-link routes come with the addresses.

So both paths are veth -> Linux bridge -> veth between the same two
namespaces with the same MTU; the nsnet one adds what nsnet adds (its nft
tables in the host namespace, its sysctls).  Each run is ``iperf3 -c ADDR
-t SECONDS`` (TCP, one stream) from ``a`` to a one-shot server in ``b``
bound to ADDR; per round the four cases run in turn (nsnet v6, hand v6,
nsnet v4, hand v4), the order reversed on odd rounds so that a load swing
on a shared machine hits both sides.  The load average is recorded around
every run; medians and the nsnet/hand ratios are printed.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

HAND6 = {"a": "fd00:99::1", "b": "fd00:99::2"}
HAND4 = {"a": "172.31.0.1", "b": "172.31.0.2"}
IFACE_SYSCTLS = {"accept_ra": "0", "autoconf": "0", "accept_dad": "0", "addr_gen_mode": "1",
                 "disable_ipv6": "0"}


def global_addrs(box, ns: str) -> tuple[str, str, int]:
    """The nsnet endpoint's v4 and global v6 address in ``ns`` and its MTU."""
    links = json.loads(box.inside(ns, "ip", "-j", "addr", "show").stdout)
    for link in links:
        if link["ifname"] == "lo":
            continue
        v4 = [a["local"] for a in link["addr_info"] if a["family"] == "inet"]
        v6 = [a["local"] for a in link["addr_info"]
              if a["family"] == "inet6" and a.get("scope") == "global"]
        if v4 and v6:
            return v4[0], v6[0], link["mtu"]
    raise RuntimeError(f"no dual-stack endpoint in {ns}: {links}")


def hand_bridge(box, holder_pid: int, mtu: int) -> None:
    """The baseline bridge: see the module docstring."""
    box.host("ip", "link", "add", "hb0", "mtu", str(mtu), "type", "bridge")
    box.host("sysctl", "-q", "-w", "net.ipv6.conf.hb0.disable_ipv6=1")  # plain L2
    box.host("ip", "link", "set", "hb0", "up")
    for ns in ("a", "b"):
        outer = f"hb{ns}"
        # created inside the endpoint namespace, the peer sent to the sandbox
        # host namespace through a process living there (ip(8) takes a PID)
        box.inside(ns, "ip", "link", "add", "hb", "mtu", str(mtu), "type", "veth",
                   "peer", "name", outer, "mtu", str(mtu), "netns", str(holder_pid))
        # what nsnet writes for its own eth0 (kernel/ipv6.py), IPv6 on last:
        # nsnet's namespaces default to IPv6 off
        for key, value in IFACE_SYSCTLS.items():
            box.inside(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.hb.{key}={value}")
        box.inside(ns, "ip", "addr", "add", f"{HAND6[ns]}/64", "dev", "hb", "nodad")
        box.inside(ns, "ip", "addr", "add", f"{HAND4[ns]}/24", "dev", "hb")
        box.inside(ns, "ip", "link", "set", "hb", "up")
        box.host("ip", "link", "set", outer, "master", "hb0", "up")


def iperf(box, addr: str, seconds: int) -> float:
    """Bits per second received, ``a`` -> ``b`` at ``addr``."""
    server = subprocess.Popen(["nsenter", f"--net={box.netns_dir}/b", "iperf3", "-s", "-1",
                               "-B", addr], stdout=subprocess.DEVNULL)
    try:
        out = ""
        for _ in range(50):  # the server needs a moment to listen
            time.sleep(0.1)
            r = box.inside("a", "iperf3", "-c", addr, "-t", str(seconds), "-J", check=False)
            out = r.stdout
            if r.returncode == 0:
                return json.loads(out)["end"]["sum_received"]["bits_per_second"]
            if "Connection refused" not in out:
                break
        raise RuntimeError(f"iperf3 to {addr} failed: {out[-500:]}")
    finally:
        server.kill()
        server.wait()


def wait_reachable(box, addr: str) -> None:
    box.inside("a", "ping", "-c", "1", "-W", "2", addr)


def main(runs: int, seconds: int) -> None:
    from conftest import Sandbox
    from nsnet import ConnectOptions, NetworkSpec

    box = Sandbox(pathlib.Path(tempfile.mkdtemp(prefix="v6plane")))
    holder = subprocess.Popen(["nsenter", f"--net={box.host_path}", "sleep", "3600"])
    got: dict[str, list[float]] = {}
    try:
        eng = box.engine()
        eng.network_create(NetworkSpec("dp", "10.230.0.0/24", subnet6="fd00:230::/64"))
        eng.connect("dp", ["a", "b"], ConnectOptions(create=True))
        v4b, v6b, mtu = global_addrs(box, "b")
        hand_bridge(box, holder.pid, mtu)
        cases = [("nsnet v6", v6b), ("hand v6", HAND6["b"]),
                 ("nsnet v4", v4b), ("hand v4", HAND4["b"])]
        for _, addr in cases:
            wait_reachable(box, addr)
        print(f"mtu {mtu}; nsnet b = {v6b}, {v4b}; load {os.getloadavg()}", flush=True)
        for r in range(runs):
            for name, addr in cases if r % 2 == 0 else cases[::-1]:
                before = os.getloadavg()[0]
                bps = iperf(box, addr, seconds)
                got.setdefault(name, []).append(bps)
                print(f"round {r} {name:9s} {bps / 1e9:6.2f} Gbit/s  "
                      f"load1 {before:.2f}-{os.getloadavg()[0]:.2f}", flush=True)
        med = {k: statistics.median(v) for k, v in got.items()}
        for fam in ("v6", "v4"):
            print(f"median {fam}: nsnet {med[f'nsnet {fam}'] / 1e9:.2f} Gbit/s, hand "
                  f"{med[f'hand {fam}'] / 1e9:.2f} Gbit/s, ratio "
                  f"{med[f'nsnet {fam}'] / med[f'hand {fam}']:.3f}; per-round ratios "
                  + " ".join(f"{n / h:.2f}" for n, h in zip(got[f"nsnet {fam}"],
                                                           got[f"hand {fam}"], strict=True)))
    finally:
        holder.kill()
        holder.wait()
        box.close()  # the namespaces go, and with them every hand-built link


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*(args + [3, 5][len(args):]))

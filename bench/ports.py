"""Published ports at scale: nsnet's nft maps vs the CNI reference portmap.

    python -m bench.ports [--max 10000] [--budget 900] [--out bench/results/ports.md]

Each method runs in its own sandbox (``unshare --mount --net``): a "web"
namespace serving TCP on port 80 behind a bridge, a "client" namespace at
198.51.100.2 joined to the sandbox host (198.51.100.1).  Mappings
host:10001.. -> web:80 are added one at a time, driven two ways so that
each side is timed the way it is used:

* ``nsnet-cli``: one ``nsnet port add`` process per mapping -- the same way
  portmap is driven (one plugin process per mapping, as a runtime execs it
  per container), process start-up included on both sides;
* ``nsnet`` (in-process): ``Engine.port_add`` in one Python process, one nft
  transaction each -- what the library costs; portmap has no in-process form.

The time of the 1st, 100th, 1,000th and 10,000th add is recorded (median
over the 10 adds ending there, and the add itself); growth is given from the
1st add (which pays one-time loading) and from the 100th.
TCP connect latency from the client through DNAT is measured with 1 mapping
and again with all of them (to the first and to the last mapping added),
each as the best of three rounds of 1,000 connects after a warm-up.
portmap stops early if its adds exceed the time budget; the table says
where it got.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .common import bridge_and_peer, run_sandboxed, sh, stop_daemons

MARKS = (1, 100, 1000, 10000)
HOST, CLIENT = "198.51.100.1", "198.51.100.2"
SUBNET, GATEWAY, WEB = "198.18.0.0/24", "198.18.0.1", "198.18.0.2"
FIRST_PORT = 10001
CNI = "/usr/lib/cni"

SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(512); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"x"); c.close()
"""

CLIENT_PROBE = """
import socket, sys, time, json
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(count):
    t = time.perf_counter()
    with socket.create_connection((ip, port), timeout=2) as c:
        c.recv(1)
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


# ------------------------------------------------------------- sandbox world
def make_client() -> None:
    sh("mount", "-t", "tmpfs", "nsnet-bench", "/run")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "netns", "add", "client")
    sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", "client")
    sh("ip", "addr", "add", f"{HOST}/24", "dev", "up0")
    sh("ip", "link", "set", "up0", "up")
    for cmd in (["addr", "add", f"{CLIENT}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                ["link", "set", "lo", "up"]):
        sh("ip", "-n", "client", *cmd)


def serve(netns_path: str) -> subprocess.Popen:
    proc = subprocess.Popen(["nsenter", f"--net={netns_path}", sys.executable, "-c", SERVER],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    return proc


def _probe(port: int, count: int) -> list[float]:
    out = sh("ip", "netns", "exec", "client", sys.executable, "-c", CLIENT_PROBE, HOST,
             str(port), str(count))
    return sorted(json.loads(out))


def latency_pair(a: int, b: int, count: int = 1000,
                 rounds: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Like :func:`latency` for two ports, their rounds interleaved so that
    neither is favoured by when it ran."""
    _probe(a, 200)
    runs: dict[int, list[list[float]]] = {a: [], b: []}
    for _ in range(rounds):
        for port in (a, b):
            runs[port].append(_probe(port, count))
    return tuple({"p50": min(statistics.median(xs) for xs in runs[p]),  # type: ignore[return-value]
                  "p99": min(xs[int(len(xs) * 0.99) - 1] for xs in runs[p])} for p in (a, b))


def latency(port: int, count: int = 1000, rounds: int = 3) -> dict[str, float]:
    """Connect latency through DNAT: a warm-up, then the best of a few
    rounds (the per-round median and p99), so a passing hiccup of this
    2-core machine is not mistaken for the cost of the ruleset."""
    _probe(port, 200)
    runs = [_probe(port, count) for _ in range(rounds)]
    return {"p50": min(statistics.median(xs) for xs in runs),
            "p99": min(xs[int(len(xs) * 0.99) - 1] for xs in runs)}


# ------------------------------------------------------------------ methods
class Nsnet:
    def prepare(self) -> str:
        from nsnet import ConnectOptions, Engine, NetworkSpec

        self.engine = Engine.open(state_dir="/run/nsnet-state",
                                  etc_netns_dir="/run/nsnet-etc", notify=lambda _m: None)
        self.engine.network_create(NetworkSpec("pm", SUBNET, GATEWAY, bridge="pm0"))
        self.engine.connect("pm", ["web"], ConnectOptions(create=True))
        return "/run/netns/web"

    def add(self, i: int) -> None:
        from nsnet import parse_ports

        self.engine.port_add("pm", "web", parse_ports([f"{FIRST_PORT + i - 1}:80"]))


class NsnetCli(Nsnet):
    """A process per change, like the portmap plugin."""

    def add(self, i: int) -> None:
        script = os.path.join(os.path.dirname(sys.executable), "nsnet")
        cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "nsnet.cli"]
        sh(*cmd, "port", "add", "pm", "web", f"{FIRST_PORT + i - 1}:80",
           env=dict(os.environ, NSNET_STATE_DIR="/run/nsnet-state",
                    NSNET_ETC_NETNS_DIR="/run/nsnet-etc"))


class Portmap:
    def prepare(self) -> str:
        bridge_and_peer("pm0", f"{GATEWAY}/24", "web", "vweb", f"{WEB}/24", GATEWAY)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        return "/run/netns/web"

    def add(self, i: int) -> None:
        conf = {"cniVersion": "1.0.0", "name": "pm", "type": "portmap",
                "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": [{"hostPort": FIRST_PORT + i - 1,
                                                    "containerPort": 80, "protocol": "tcp"}]},
                "prevResult": {"cniVersion": "1.0.0",
                               "interfaces": [{"name": "eth0", "sandbox": "/run/netns/web"}],
                               "ips": [{"address": f"{WEB}/24", "interface": 0,
                                        "gateway": GATEWAY}]}}
        env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID=f"bench{i}",
                   CNI_NETNS="/run/netns/web", CNI_IFNAME="eth0", CNI_PATH=CNI)
        sh(f"{CNI}/portmap", stdin=json.dumps(conf), env=env)


def worker(method: str, top: int, budget: float) -> dict:
    make_client()
    impl = {"nsnet": Nsnet, "nsnet-cli": NsnetCli, "portmap": Portmap}[method]()
    server = serve(impl.prepare())
    times: list[float] = []
    result: dict = {"method": method, "ok": True}
    try:
        for i in range(1, top + 1):
            t0 = time.perf_counter()
            impl.add(i)
            times.append(time.perf_counter() - t0)
            if i == 1:
                result["latency_1"] = latency(FIRST_PORT)
            if sum(times) > budget:
                break
        first, last = latency_pair(FIRST_PORT, FIRST_PORT + len(times) - 1)
        result["latency_n_first"], result["latency_n_last"] = first, last
    except Exception as exc:  # reported in the table, not raised
        result.update(ok=False, problem=str(exc)[-300:])
    finally:
        server.kill()
        stop_daemons("/run/nsnet-state")
    result["reached"] = len(times)
    result["total"] = sum(times)
    marks = sorted({k for k in MARKS if k <= len(times)} | ({len(times)} if times else set()))
    result["adds"] = {k: times[k - 1] for k in marks}  # (and the last add reached)
    result["window"] = {k: statistics.median(times[max(0, k - 10):k]) for k in marks}
    return result


# ------------------------------------------------------------------- driver
def run(method: str, top: int, budget: float) -> dict:
    return run_sandboxed("bench.ports", method, "--max", str(top), "--budget", str(budget))


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.2f} ms"


HOW = {"nsnet": "in-process: `Engine.port_add` in one Python process",
       "nsnet-cli": "a process per mapping: `nsnet port add` (start-up included)",
       "portmap": "a process per mapping: the reference `portmap` plugin, ADD"}


def _at(r: dict, key: str, k: int) -> float | None:
    d = r.get(key, {})
    return d.get(str(k), d.get(k))


def _ratio(res: dict[str, dict], a: str, b: str, k: int) -> str:
    x, y = _at(res.get(a, {}), "window", k), _at(res.get(b, {}), "window", k)
    return f"{y / x:.1f}x" if x and y else "-"


def report(res: dict[str, dict], top: int, budget: float, note: str = "") -> str:
    marks = [k for k in MARKS if k <= top]
    lines = ["# Published ports at scale: nsnet vs CNI portmap", "",
             f"Same run, same machine; mappings added one at a time up to {top} "
             f"(budget {budget:.0f} s of adds per method). Generated by `python -m bench.ports`."
             + (f"  {note}" if note else ""), "", "How each side was driven:", ""]
    lines += [f"* `{name}`: {HOW.get(name, name)}" for name in res]
    lines += ["", "## Time to add the k-th mapping (median of the 10 adds ending at k; add itself)",
              "", "| k | " + " | ".join(res) + " | portmap / nsnet-cli (same way) | "
              "portmap / nsnet in-process |", "|---|" + "---|" * (len(res) + 2)]
    for k in marks:
        cells = [f"{_ms(_at(r, 'window', k))} ({_ms(_at(r, 'adds', k))})" for r in res.values()]
        same, inproc = _ratio(res, "nsnet-cli", "portmap", k), _ratio(res, "nsnet", "portmap", k)
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {same} | {inproc} |")
    lines += ["", "## Growth and latency", "",
              "| method | reached | total add time | last/1st add | last/100th add "
              "(target nsnet <= 2x) | connect p50 with 1 | p50 with all, first / last mapping | "
              "ratio last/1 (target nsnet <= 1.1x) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        w = r.get("window", {})
        first, hundredth = w.get("1", w.get(1)), w.get("100", w.get(100))
        last_k = max((int(k) for k in w), default=0)
        last = w.get(str(last_k), w.get(last_k))
        growth = f"{last / first:.2f}x (k={last_k})" if first and last else "-"
        growth100 = f"{last / hundredth:.2f}x (k={last_k})" if hundredth and last and \
            last_k > 100 else "-"
        l1 = r.get("latency_1", {}).get("p50")
        lf = r.get("latency_n_first", {}).get("p50")
        ll = r.get("latency_n_last", {}).get("p50")
        ratio = f"{max(lf, ll) / l1:.2f}x" if l1 and lf and ll else "-"
        problem = "" if r.get("ok") else f" (problem: {r.get('problem')})"
        lines.append(f"| {name}{problem} | {r.get('reached')} | {r.get('total', 0):.1f} s | "
                     f"{growth} | {growth100} | {_ms(l1)} | {_ms(lf)} / {_ms(ll)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=10000)
    ap.add_argument("--budget", type=float, default=900.0, help="seconds of adds per method")
    ap.add_argument("--methods", nargs="+", default=["nsnet", "nsnet-cli", "portmap"])
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. the load)")
    ap.add_argument("--out")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.max, args.budget)))
        return
    res = {m: run(m, args.max, args.budget) for m in args.methods}
    text = report(res, args.max, args.budget, args.note)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(res, f, indent=1)
    if not all(r.get("ok") for r in res.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()

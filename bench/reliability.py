"""Fault injection: kill nsnet with SIGKILL at every crash point of a scenario
(and at random times), recover, and prove nothing leaked.

    python -m bench.reliability            # every point + random kills (make reliability)
    python -m bench.reliability --sample 8 --random 2 --plant-check   # what `make test` runs

Each trial runs in its own sandbox (``unshare --mount --net``, tmpfs /run):
the scenario's CLI steps run up to step i, step i runs with NSNET_CRASH_AT=j
(the j-th crash point that process reaches SIGKILLs it), then ``nsnet
reconcile`` recovers, and the trial asserts: reconcile --dry-run is clean
(state == kernel), no link, namespace or lease exists that the state does not
claim, the networks still pass ``nsnet check``, and the whole world nsnet
makes (links, namespaces, mounts, addresses, routes, sysctls, nft rules by
content, resolv.conf files, state rows, the DNS daemon: see
:mod:`bench.reliability_world`) is exactly that of a clean run before the
killed step (rolled back) or after it (finished); then the rest of the
scenario runs and the world must be that of a clean run's end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from .common import stop_daemons
from .reliability_world import differences, world

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = "/run/nsnet-state"
ETC = "/run/nsnet-etc"  # resolv.conf files: on the sandbox tmpfs, never /etc

FIRST = [f"n{i}" for i in range(1, 21)]
LATER = [f"x{i}" for i in range(1, 13)]
SCENARIO: list[list[str]] = [
    ["network", "create", "a", "--subnet", "198.51.100.0/24"],
    ["connect", "a", *FIRST, "--create"],
    ["ns", "add", "m1", "m2"],
    ["connect", "a", "m1", "m2"],
    ["network", "create", "b", "--subnet", "203.0.113.0/24", "--bridge", "brb"],
    ["connect", "b", "n1", "n2", "m1"],
    ["disconnect", "a", "n1", "n2", "n3"],
    ["ns", "rm", *FIRST[3:10]],
    ["network", "rm", "--force", "b"],
    # the firewall: a --no-icc network, published ports added and removed
    ["network", "create", "c", "--subnet", "203.0.113.0/24", "--no-icc"],
    ["connect", "c", "p1", "p2", "--create"],
    ["connect", "c", "p3", "--create", "-p", "8080:80", "-p", "5353:53/udp"],
    ["port", "add", "c", "p3", "9000-9002:90-92"],
    ["port", "rm", "c", "p3", "8080:80"],
    ["network", "rm", "--force", "c"],
    # IPv6 (#16): a dual-stack network, an IPv6-only routed one, a v6 port
    ["network", "create", "d", "--subnet", "198.18.0.0/24", "--subnet", "fd00:d::/64"],
    ["connect", "d", "q1", "q2", "--create"],
    ["connect", "d", "q3", "--create", "-p", "8081:81", "--ip6", "fd00:d::99"],
    ["network", "create", "e", "--subnet", "fd00:e::/64", "--no-ipv4", "--ipv6-mode", "routed"],
    ["connect", "e", "q1", "q4", "--create"],
    ["disconnect", "d", "q2"],
    ["network", "rm", "--force", "d"],  # one per step: a multi-name rm removes them in
    ["network", "rm", "--force", "e"],  # turn, so a kill between them is neither world
    ["connect", "a", *LATER, "--create"],
    ["network", "rm", "--force", "a"],
    ["ns", "rm", *FIRST[:3], *FIRST[10:], *LATER, "m1", "m2", "p1", "p2", "p3",
     "q1", "q2", "q3", "q4"],
]


def _nsnet(args: list[str], extra_env: dict[str, str] | None = None,
           kill_after: float | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NSNET_STATE_DIR=STATE, NSNET_ETC_NETNS_DIR=ETC, **(extra_env or {}))
    cmd = [sys.executable, "-m", "nsnet.cli", *args]
    if kill_after is None:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _json(args: list[str]) -> list:
    res = _nsnet(args)
    if res.returncode:
        raise AssertionError(f"nsnet {' '.join(args)}: {res.stderr.strip()}")
    return json.loads(res.stdout)


def _kernel() -> tuple[set[str], set[str]]:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    names = {lk["ifname"] for lk in links} - {"lo"}
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    return names, netns


def _leaks() -> list[str]:
    """Everything in the kernel must be claimed by the state, and vice versa."""
    problems = []
    res = _nsnet(["reconcile", "--dry-run"])
    if res.returncode:
        problems.append("reconcile --dry-run not clean: " + res.stdout.strip().replace("\n", "; "))
    nets = _json(["network", "ls", "--json"])
    owned = {n["name"] for n in _json(["ns", "ls", "--json"]) if n["owned"]}
    expect_links = {n["bridge"] for n in nets} | {e["host_ifname"] for n in nets
                                                  for e in n["endpoints"]}
    links, netns = _kernel()
    if links != expect_links:
        problems.append(f"links: extra {sorted(links - expect_links)}, "
                        f"missing {sorted(expect_links - links)}")
    if netns != owned:
        problems.append(f"namespaces: extra {sorted(netns - owned)}, "
                        f"missing {sorted(owned - netns)}")
    ips = [a for n in nets for e in n["endpoints"] for a in (e["address"], e["address6"]) if a]
    if len(ips) != len(set(ips)):
        problems.append("an address is allocated twice")
    for n in nets:  # (a --no-icc network is meant to fail a full matrix)
        if len(n["endpoints"]) >= 2 and n["icc"] and _nsnet(["check", n["name"]]).returncode:
            problems.append(f"network {n['name']} does not pass check")
    return problems


def _refs() -> list[dict]:
    """The clean run's world before each step and at the end (from --count)."""
    with open(os.environ["NSNET_REL_REFS"]) as f:
        return json.load(f)


def _world_problems(refs: list[dict], allowed: list[int], when: str) -> list[str]:
    """The world must equal one of the clean run's worlds ``allowed``."""
    now = world(STATE, ETC)
    diffs = [differences(now, refs[i]) for i in allowed]
    if any(not d for d in diffs):
        return []
    closest = min(diffs, key=len)
    return [f"{when}, the world differs from a clean run's: " + "; ".join(closest[:6])
            + (f" (+{len(closest) - 6} more)" if len(closest) > 6 else "")]


def _plant_leaks() -> None:
    """The harness's own test: leaks it must report (as a crash could leave
    them), none of which reconcile or the scenario's later steps remove."""
    os.makedirs(os.path.join(ETC, "ghost"), exist_ok=True)
    with open(os.path.join(ETC, "ghost", "resolv.conf"), "w") as f:
        f.write("# nsnet: embedded DNS of network 'a'\nnameserver 198.51.100.1\n")
    subprocess.run(["nft", "add", "table", "ip", "stray"], check=True)
    with open("/proc/sys/net/ipv4/conf/lo/route_localnet", "w") as f:  # the sandbox's lo
        f.write("1")


def trial(step: int, crash_at: int | None, kill_after: float | None) -> dict:
    """Runs inside the sandbox."""
    refs = _refs()
    subprocess.run(["mount", "-t", "tmpfs", "nsnet-rel", "/run"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for args in SCENARIO[:step]:
        res = _nsnet(args)
        if res.returncode:
            return {"ok": False, "problems": [f"setup step failed: {res.stderr.strip()}"]}
    env = {"NSNET_CRASH_AT": str(crash_at)} if crash_at else None
    res = _nsnet(SCENARIO[step], env, kill_after)
    killed = res.returncode == -signal.SIGKILL
    if crash_at and not killed:
        return {"ok": False, "problems": [f"expected a kill, got {res.returncode}: "
                                          f"{res.stderr.strip()}"]}
    rec = _nsnet(["reconcile"])
    problems = [] if rec.returncode == 0 else [f"reconcile failed: {rec.stderr.strip()}"]
    if os.environ.get("NSNET_REL_PLANT"):
        _plant_leaks()
    problems += _leaks()
    problems += _world_problems(refs, [step, step + 1], "after recovery")
    # A user re-runs the command that died: it succeeds (rolled back), or finds
    # the work done: a deletion rolled forward ("does not exist", exit 3), or a
    # creation killed after its commit ("already exists/connected", exit 4).
    retry = _nsnet(SCENARIO[step]) if killed else res
    if retry.returncode not in (0, 3, 4):
        problems.append(f"re-running the killed step: {retry.stderr.strip()}")
    for args in SCENARIO[step + 1 :]:
        res = _nsnet(args)
        if res.returncode:
            problems.append(f"after recovery, nsnet {' '.join(args)}: {res.stderr.strip()}")
    links, netns = _kernel()
    if links or netns:
        problems.append(f"left at the end: {sorted(links | netns)}")
    problems += _world_problems(refs, [len(SCENARIO)], "at the end")
    return {"ok": not problems, "problems": problems, "killed": killed}


def concurrency() -> dict:
    """Inside the sandbox: 100 concurrent connects, 20 concurrent creates of
    one name, and a connect/disconnect storm."""
    subprocess.run(["mount", "-t", "tmpfs", "nsnet-rel", "/run"], check=True)
    env = dict(os.environ, NSNET_STATE_DIR=STATE, NSNET_ETC_NETNS_DIR=ETC)
    cli = [sys.executable, "-m", "nsnet.cli"]

    def spawn_all(argvs: list[list[str]]) -> list[tuple[int, str]]:
        procs = [subprocess.Popen([*cli, *a], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for a in argvs]
        return [(p.wait(), p.stderr.read()) for p in procs]

    _nsnet(["network", "create", "c", "--subnet", "198.51.100.0/24"])
    connects = spawn_all([["connect", "c", f"c{i}", "--create"] for i in range(100)])
    net = _json(["network", "inspect", "c"])[0]
    addrs = {e["address"] for e in net["endpoints"]}
    creates = spawn_all([["network", "create", "same", "--subnet", f"198.18.{i}.0/24"]
                         for i in range(20)])
    rng = random.Random(3)
    storm = spawn_all([[rng.choice(["connect", "disconnect"]), "c",
                        *rng.sample([f"c{i}" for i in range(100)], 3)] for _ in range(40)])
    storm_bad = [e for rc, e in storm if rc and "already connected" not in e
                 and "not connected" not in e]  # is/are (all or nothing)
    return {"connect_errors": sum(1 for rc, _ in connects if rc),
            "distinct_addresses": len(addrs), "endpoints": len(net["endpoints"]),
            "reachable": _nsnet(["check", "c"]).returncode == 0,
            "create_winners": sum(1 for rc, _ in creates if rc == 0),
            "create_clean_losers": sum(1 for rc, e in creates
                                       if rc == 4 and "already exists" in e),
            "storm_unexpected_errors": len(storm_bad),
            "storm_unexpected_messages": sorted({e.strip()[:200] for e in storm_bad})[:5],
            "state_equals_kernel": not _leaks()}


def count_points() -> dict:
    """Crash points each scenario step passes, and how long it runs (once,
    in a sandbox): random kills are drawn within that duration; and the
    world before each step and at the end, the references of every trial."""
    subprocess.run(["mount", "-t", "tmpfs", "nsnet-rel", "/run"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    counts, refs = [], [world(STATE, ETC)]
    for i, args in enumerate(SCENARIO):
        log = f"/run/points-{i}"
        start = time.monotonic()
        res = _nsnet(args, {"NSNET_CRASH_LOG": log})
        took = time.monotonic() - start
        if res.returncode:
            raise SystemExit(f"scenario step {args} failed: {res.stderr}")
        with open(log) as f:
            counts.append((sum(1 for _ in f), took))
        refs.append(world(STATE, ETC))
    return {"counts": counts, "refs": refs}


def _sandboxed(*args: str) -> dict | list:
    cmd = ["unshare", "--mount", "--net", "--propagation", "private", "--",
           sys.executable, "-m", "bench.reliability", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE),
                         timeout=600)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "problems": [f"harness error: {res.stderr.strip()[-400:]}"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=int, help="only this many crash points, spread evenly")
    p.add_argument("--random", type=int, default=40, help="random-time kills")
    p.add_argument("--jobs", type=int, default=1, help="trials run side by side")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="write the report here (markdown)")
    p.add_argument("--plant-check", action="store_true",
                   help="also run one trial with planted leaks the harness must report")
    p.add_argument("--only", nargs="+", metavar="STEP:POINT",
                   help="only these crash points (e.g. 3:4 to reproduce a report's line)")
    p.add_argument("--trial", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.count or args.concurrency or args.trial:
        try:  # inside a sandbox: a daemon nsnet started must not outlive it
            if args.count:
                print(json.dumps(count_points()))
            elif args.concurrency:
                print(json.dumps(concurrency()))
            else:
                step, crash_at, delay = (int(args.trial[0]), int(args.trial[1]),
                                         float(args.trial[2]))
                print(json.dumps(trial(step, crash_at or None,
                                       delay if delay >= 0 else None)))
        finally:
            stop_daemons(STATE)
        return 0
    counted = _sandboxed("--count")
    if "counts" not in counted:
        raise SystemExit(f"counting crash points failed: {counted}")
    measured = counted["counts"]
    fd, refs_path = tempfile.mkstemp(prefix="nsnet-rel-refs-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(counted["refs"], f)
    os.environ["NSNET_REL_REFS"] = refs_path
    try:
        return _run_trials(args, measured)
    finally:
        os.unlink(refs_path)


def _sample(points: list[tuple[int, int]], counts: list[int], size: int
            ) -> list[tuple[int, int]]:
    """Deterministic: half the sample is the last point of steps spread over
    the scenario (after a commit, where leaks of post-commit work hide), half
    spread evenly over all points."""
    last = [(i, n) for i, n in enumerate(counts) if n]
    k = size // 2
    chosen = [last[int(x * len(last) / k)] for x in range(k)] if k else []
    rest = [p for p in points if p not in chosen]
    stride = len(rest) / (size - k)
    return sorted(chosen + [rest[int(x * stride)] for x in range(size - k)])


def _run_trials(args: argparse.Namespace, measured: list) -> int:
    counts = [n for n, _ in measured]
    points = [(i, j) for i, n in enumerate(counts) for j in range(1, n + 1)]
    rng = random.Random(args.seed)
    if args.only:
        points = [(int(s), int(a)) for s, a in (o.split(":") for o in args.only)]
    elif args.sample and args.sample < len(points):
        points = _sample(points, counts, args.sample)
    steps = [rng.randrange(len(SCENARIO)) for _ in range(args.random)]
    kills = [(i, round(rng.uniform(0.0, measured[i][1]), 3)) for i in steps]
    failures, killed_random = [], 0
    # Trials are independent sandboxes: --jobs runs several side by side
    # (results are reported in order; a random kill's delay is drawn from the
    # step's duration measured alone, so it lands earlier in the command when
    # trials share the cores -- still a kill at an arbitrary moment).
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        crash_runs = pool.map(lambda p: _sandboxed("--trial", str(p[0]), str(p[1]), "-1"),
                              points)
        for n, ((step, at), res) in enumerate(zip(points, crash_runs, strict=True), 1):
            if not res.get("ok"):
                failures.append(f"step {step} ({' '.join(SCENARIO[step][:3])}) point {at}: "
                                + "; ".join(res.get("problems", [])))
            print(f"  crash point {n}/{len(points)}: step {step} hit {at}: "
                  f"{'ok' if res.get('ok') else 'LEAK'}", file=sys.stderr, flush=True)
        kill_runs = pool.map(lambda k: _sandboxed("--trial", str(k[0]), "0", str(k[1])), kills)
        for (step, delay), res in zip(kills, kill_runs, strict=True):
            killed_random += bool(res.get("killed"))
            if not res.get("ok"):
                failures.append(f"random kill step {step} after {delay}s: "
                                + "; ".join(res.get("problems", [])))
    if args.plant_check:  # the harness must see leaks it did not cause either
        os.environ["NSNET_REL_PLANT"] = "1"
        try:
            planted = _sandboxed("--trial", "0", str(counts[0]), "-1")
        finally:
            del os.environ["NSNET_REL_PLANT"]
        seen = " ".join(planted.get("problems", []))
        caught = [w for w in ("ghost/resolv.conf", "stray", "lo/route_localnet") if w in seen]
        print(f"planted leaks caught: {len(caught)}/3 ({', '.join(caught)})")
        if len(caught) != 3:
            failures.append(f"the harness missed planted leaks: {seen[:600]}")
    summary = (f"kill points tried: {len(points)} crash points (of {sum(counts)} in the "
               f"scenario) + {len(kills)} random-time kills ({killed_random} landed before the "
               f"command finished) = {len(points) + killed_random} distinct kills mid-operation; "
               f"leaks or inconsistencies found: {len(failures)}")
    print(summary)
    for f in failures:
        print("  " + f)
    conc = _sandboxed("--concurrency") if args.out else {}
    if conc:
        print("concurrency:", json.dumps(conc))
        if conc.get("connect_errors") or conc.get("distinct_addresses") != 100 or \
                conc.get("create_winners") != 1 or not conc.get("state_equals_kernel") or \
                conc.get("storm_unexpected_errors") or not conc.get("reachable"):
            failures.append(f"concurrency: {conc}")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("# Reliability: fault injection\n\n"
                     f"`python -m bench.reliability --random {args.random} --jobs {args.jobs}"
                     f"{' --plant-check' if args.plant_check else ''}` (seed {args.seed}), "
                     f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.  "
                     "Scenario steps:\n\n"
                     + "".join(f"{i}. `nsnet {' '.join(s)}` ({counts[i]} crash points)\n"
                               for i, s in enumerate(SCENARIO))
                     + f"\n**{summary}**\n" + "".join(f"\n- {f}" for f in failures) + "\n"
                     + ("\n## Concurrency\n\n" + "".join(f"- {k}: {v}\n"
                                                        for k, v in conc.items())
                        if conc else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

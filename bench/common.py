"""What the benchmark drivers share: running a command, and running one
method's worker inside its own sandbox (``unshare --mount --net``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def sh(*argv: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{' '.join(argv[:6])}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def run_sandboxed(module: str, method: str, *args: str, worker_flag: bool = True,
                  failed: dict | None = None, timeout: float | None = None) -> dict:
    """``python -m MODULE --worker METHOD ARGS...`` (without ``--worker`` if
    not ``worker_flag``) in a fresh sandbox; its last stdout line is the JSON
    result (a failure is reported, not raised: ``failed`` plus the problem)."""
    cmd = ["unshare", "--mount", "--net", "--propagation", "private", "--", sys.executable,
           "-m", module, *(["--worker"] if worker_flag else []), method, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE),
                         timeout=timeout)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        base = {"reached": 0, "adds": {}, "window": {}} if failed is None else failed
        return {"method": method, "ok": False, **base, "problem": res.stderr.strip()[-300:]}


def bridge_and_peer(bridge: str, gateway_cidr: str, netns: str, veth: str, peer_cidr: str,
                    default_via: str | None = None) -> None:
    """A bridge with an address, and a namespace plugged into it by a veth
    (the baselines' hand-made network, the article's way)."""
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "addr", "add", gateway_cidr, "dev", bridge)
    sh("ip", "link", "set", bridge, "up")
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", veth, "master", bridge, "type", "veth", "peer", "name", "eth0",
       "netns", netns)
    sh("ip", "link", "set", veth, "up")
    cmds = [["addr", "add", peer_cidr, "dev", "eth0"], ["link", "set", "eth0", "up"],
            ["link", "set", "lo", "up"]]
    if default_via:
        cmds.append(["route", "add", "default", "via", default_via])
    for cmd in cmds:
        sh("ip", "-n", netns, *cmd)


def emit(text: str, out: str | None, results: dict[str, dict]) -> None:
    """Print a report, write it to ``out``, exit 1 if a method failed."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
    if not all(r.get("ok") for r in results.values()):
        sys.exit(1)


def stop_daemons(state_dir: str) -> None:
    """nsnet's DNS server and CNI agent of a sandbox's state, by their pid
    files: they would otherwise outlive the worker."""
    from nsnet.dns import stop_daemons as stop

    if os.path.isdir(state_dir):
        stop(state_dir)

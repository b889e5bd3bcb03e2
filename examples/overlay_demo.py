"""`make demo-overlay`: an overlay network across three hosts, on one machine.

Builds three simulated hosts (network namespaces h1-h3 on an underlay
bridge, 198.51.100.11-13, each with its own nsnet state directory) and a
real 3-member etcd cluster, one member per host -- all in a throwaway
directory, nothing outside it (tests/overlay_world.py does the building).
Then runs, as a user would on each host, and prints every command:

    nsnet cluster join --store etcd://... --advertise IP    (each host)
    nsnet cluster agent &                                   (each host)
    nsnet network create demo --driver overlay --subnet 10.210.0.0/16   (h1)
    nsnet connect demo web --create                         (on each host)
    ping across hosts; nsnet network inspect demo; nsnet cluster status

and tears everything down (agents and etcd by PID, namespaces, mounts).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the simulated-host world of the tests

from overlay_world import OverlayWorld  # noqa: E402


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def env_of(host) -> dict[str, str]:
    base = os.path.dirname(host.state_dir)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NSNET_HOST_NETNS": host.path,
            "NSNET_STATE_DIR": host.state_dir, "NSNET_NETNS_DIR": os.path.join(base, "netns"),
            "NSNET_ETC_NETNS_DIR": os.path.join(base, "etc-netns")}


def nsnet(host, *args: str) -> str:
    print(f"[{host.name}]$ nsnet {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-I", "-m", "nsnet.cli", *args], env=env_of(host),
                          capture_output=True, text=True, timeout=120)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print("    " + out.replace("\n", "\n    "), flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed: nsnet {' '.join(args)} exited {proc.returncode}")
    return proc.stdout


def ping(host, ns: str, ip: str) -> bool:
    path = os.path.join(env_of(host)["NSNET_NETNS_DIR"], ns)
    print(f"[{host.name}]$ nsnet ns exec {ns} ping -c 2 {ip}", flush=True)
    proc = subprocess.run(["nsenter", f"--net={path}", "ping", "-c", "2", "-i", "0.2", "-W",
                           "2", ip], capture_output=True, text=True)
    print("    " + proc.stdout.strip().splitlines()[-2 if proc.returncode == 0 else -1],
          flush=True)
    return proc.returncode == 0


def main() -> int:
    base = pathlib.Path(tempfile.mkdtemp(prefix="nsnet-demo-overlay-"))
    world = None
    agents: list[subprocess.Popen] = []
    try:
        say("3 simulated hosts (namespaces on an underlay bridge) + a 3-member etcd")
        world = OverlayWorld(base / "w", n=3)
        for h in world.hosts:
            print(f"    {h.name}: underlay {h.ip}, etcd member {h.member.name} "
                  f"(pid {h.member.proc.pid}), state {h.state_dir}")
            for d in ("netns", "etc-netns"):
                os.makedirs(os.path.join(os.path.dirname(h.state_dir), d), mode=0o755)

        say("each host joins the cluster once and runs its agent")
        for h in world.hosts:
            nsnet(h, "cluster", "join", "--store", world.store_url, "--advertise", h.ip,
                  "--name", h.name)
            print(f"[{h.name}]$ nsnet cluster agent &", flush=True)
            log = open(base / f"agent-{h.name}.log", "ab")  # noqa: SIM115
            agents.append(subprocess.Popen([sys.executable, "-I", "-m", "nsnet.cli", "cluster",
                                            "agent"], env=env_of(h), stdout=log, stderr=log))
            log.close()

        say("one overlay network for the whole cluster (VNI from etcd)")
        h1, h2, h3 = world.hosts
        nsnet(h1, "network", "create", "demo", "--driver", "overlay", "--subnet",
              "10.210.0.0/16", "--no-dns")

        say("one namespace per host on it")
        ips = {}
        for h in world.hosts:
            nsnet(h, "connect", "demo", "web", "--create")
            data = json.loads(subprocess.run(
                [sys.executable, "-I", "-m", "nsnet.cli", "network", "inspect", "demo"],
                env=env_of(h), capture_output=True, text=True, check=True).stdout)[0]
            ips[h.name] = next(e["address"] for e in data["endpoints"]).split("/")[0]

        say("the cluster-wide view, from any host")
        nsnet(h3, "network", "ls")
        view = json.loads(nsnet(h2, "network", "inspect", "demo", "--format",
                                "{{json .Cluster}}"))
        print(f"    VNI {view['vni']}; endpoints: "
              + ", ".join(f"{e['ip']} on {e['host']}" for e in view["endpoints"]))
        nsnet(h1, "cluster", "status")

        say("pings across hosts (VXLAN, static FDB + neighbour entries from etcd)")
        time.sleep(0.5)  # the agents' watches have programmed the entries by now
        results = [ping(a, "web", ips[b.name]) for a in world.hosts for b in world.hosts
                   if a is not b]
        say(f"{sum(results)}/{len(results)} cross-host pings answered")
        return 0 if all(results) else 1
    finally:
        say("tearing down: agents and etcd by PID, namespaces, mounts, files")
        for proc in agents:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        if world is not None:
            from nsnet.kernel.netns import umount

            for h in world.hosts:
                d = os.path.join(os.path.dirname(h.state_dir), "netns")
                names = os.listdir(d) if os.path.isdir(d) else []
                for path in [os.path.join(d, n) for n in names] + [d]:
                    while True:
                        try:
                            umount(path)
                        except OSError:
                            break
            world.close()
        shutil.rmtree(base, ignore_errors=True)
        print("    done: nothing left behind", flush=True)


if __name__ == "__main__":
    sys.exit(main())

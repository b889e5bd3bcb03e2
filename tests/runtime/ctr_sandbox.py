"""containerd's own client, ``ctr run --cni --rm``, on nsnet's CNI plugin.

Run by test_containerd.py as PID 1 of a sandbox made with
``unshare --mount --net --pid --fork --kill-child --mount-proc``: the
machine's network namespace, /run, /etc/cni/net.d, /opt and /var/lib are
never touched (sandboxfs.py), and when this process ends the kernel ends every process of the
sandbox (containerd, its shims, the containers, nsnet's daemons) -- a
backstop only: this driver stops each of them itself, by PID, and fails if
any container or shim outlives ``--rm``.

``ctr run --cni`` (containerd 1.6) reads the first configuration in
/etc/cni/net.d and the plugins in /opt/cni/bin (go-cni's defaults, not
settable from ctr), passes ``CNI_NETNS=/proc/PID/ns/net`` on ADD and an
empty ``CNI_NETNS`` on DEL, no CNI_ARGS and no capabilities; it gives the
container no /etc/resolv.conf, so the containers get one with a bind mount.

Usage: ctr_sandbox.py WORKDIR README SCENARIO [N]
  pair      two containers: addresses, ping each other and the gateway,
            resolve each other by name; --rm leaves nothing
  parallel  N containers started at once: N distinct addresses, all gone
            after --rm
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sandboxfs import private_dir

TAG = uuid.uuid4().hex[:6]  # container IDs (and so runc's cgroup names) unique
CTR_NS = "nsnettest"  # containerd namespace; CNI_CONTAINERID is "<ns>-<id>"
NETWORK = "ctrnet"
CNI_CONF_DIR = "/etc/cni/net.d"  # go-cni's defaults: ctr has no flag for them
CNI_BIN_DIR = "/opt/cni/bin"
LIBCNI_CACHE = "/var/lib/cni"  # go-cni's, not settable from ctr either
REFERENCE_PLUGINS = "/usr/lib/cni"  # Debian's containernetworking-plugins
BUSYBOX_APPLETS = ("sh", "ping", "nslookup", "ip", "sleep", "cat", "echo", "test", "[")


class Failure(Exception):
    """A promise ctr + nsnet did not keep (the message says which)."""


def step(msg: str) -> None:
    print(f"--- {msg}", flush=True)


def run(argv: list[str], check: bool = True, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise Failure(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


# ------------------------------------------------------------ the sandbox
def private_mounts(work: Path) -> None:
    """/run (containerd's shims, runc, fifos), /etc/cni/net.d, /opt/cni/bin
    and /var/lib/cni (libcni's cache, in ctr) of the sandbox only."""
    run(["mount", "-t", "tmpfs", "nsnet-ctr-run", "/run"])
    for path in (CNI_CONF_DIR, CNI_BIN_DIR, LIBCNI_CACHE):
        private_dir(path, work)
    run(["ip", "link", "set", "lo", "up"])


def readme_conflist(readme: Path, work: Path) -> dict:
    """The README's example configuration (the first JSON block of its CNI
    section), pointed at this sandbox's state: what a user would install."""
    text = readme.read_text()
    section = text[text.index("### CNI plugin"):]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    if not block:
        raise Failure("README's CNI section has no ```json configuration")
    conf = json.loads(block.group(1))
    conf["name"] = NETWORK
    nsnet = conf["plugins"][0]
    assert nsnet["type"] == "nsnet", nsnet
    nsnet.update(stateDir=str(work / "state"), etcNetnsDir=str(work / "etc-netns"))
    return conf


def install_cni(work: Path, python: str, conf: dict) -> None:
    for plugin in ("bandwidth", "portmap", "tuning", "firewall", "loopback", "host-local"):
        os.symlink(os.path.join(REFERENCE_PLUGINS, plugin), os.path.join(CNI_BIN_DIR, plugin))
    run([python, "-m", "nsnet.cli", "cni", "install", "--dir", CNI_BIN_DIR])
    Path(CNI_CONF_DIR, f"10-{NETWORK}.conflist").write_text(json.dumps(conf, indent=1))


def busybox_rootfs(work: Path, nameserver: str) -> Path:
    root = work / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "shared").mkdir()
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        raise Failure("/bin/busybox missing (make runtime-deps installs busybox-static)")
    subprocess.run(["cp", busybox, str(root / "bin" / "busybox")], check=True)
    for applet in BUSYBOX_APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "resolv.conf").touch()  # the mount point for the one below
    (work / "resolv.conf").write_text(f"nameserver {nameserver}\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    return root


class Containerd:
    """A containerd whose root, state, socket and plugin dirs are in WORK."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.sock = str(work / "containerd.sock")
        config = work / "containerd.toml"
        config.write_text(f"""version = 2
root = "{work}/containerd-root"
state = "{work}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{work}/containerd-opt"
""")
        self.log = open(work / "containerd.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["containerd", "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.env = dict(os.environ, CONTAINERD_ADDRESS=self.sock, CONTAINERD_NAMESPACE=CTR_NS)
        self._wait_ready()

    def _wait_ready(self) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Failure(f"containerd exited {self.proc.returncode}: {self.log_text()}")
            if os.path.exists(self.sock) and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise Failure("containerd did not answer within 30 s")

    def log_text(self) -> str:
        self.log.flush()
        return (self.work / "containerd.log").read_text()[-4000:]

    def ctr(self, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["ctr", *args], check=check, timeout=timeout, env=self.env)

    def run_argv(self, rootfs: Path, cid: str, script: str) -> list[str]:
        """``ctr run --cni --rm`` as a user types it (plus no cgroup of its
        own: runc then makes one below ours and removes it)."""
        return ["ctr", "run", "--cni", "--rm", "--cgroup", "",
                "--env", "PATH=/bin",
                "--mount", f"type=bind,src={self.work}/resolv.conf,dst=/etc/resolv.conf,"
                           "options=rbind:ro",
                "--mount", f"type=bind,src={self.work}/shared,dst=/shared,options=rbind:rw",
                "--rootfs", str(rootfs), cid, "/bin/sh", "-c", script]

    def leftovers(self) -> tuple[list[str], list[str]]:
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        containers = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        return tasks, containers

    def remove_everything(self) -> None:
        """Whatever a failed run left: tasks killed and deleted, containers
        deleted -- through containerd, by their IDs."""
        tasks, containers = self.leftovers()
        for cid in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
            self.ctr("tasks", "rm", "-f", cid, check=False)
        for cid in containers:
            self.ctr("containers", "rm", cid, check=False)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


# --------------------------------------------------------------- checks
class Nsnet:
    def __init__(self, work: Path, python: str) -> None:
        self.argv = [python, "-m", "nsnet.cli", "--state-dir", str(work / "state"),
                     "--etc-netns-dir", str(work / "etc-netns")]
        self.state = work / "state"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.argv, *args], check=check)

    def endpoints(self) -> list[dict]:
        return json.loads(self.cli("network", "inspect", NETWORK).stdout)[0]["endpoints"]

    def gateway(self) -> str:
        return json.loads(self.cli("network", "inspect", NETWORK).stdout)[0]["gateway"]

    def namespaces(self) -> list:
        return json.loads(self.cli("ns", "ls", "--json").stdout)

    def assert_nothing_left(self) -> None:
        eps = self.endpoints()
        if eps:
            raise Failure(f"endpoints left after ctr run --rm: {eps}")
        names = self.namespaces()
        if names:
            raise Failure(f"namespace records left after ctr run --rm: {names}")
        drift = self.cli("reconcile", "--dry-run", check=False)
        if drift.returncode != 0:
            raise Failure(f"nsnet reconcile --dry-run after --rm:\n{drift.stdout}{drift.stderr}")
        cached = os.listdir(f"{LIBCNI_CACHE}/results") if os.path.isdir(
            f"{LIBCNI_CACHE}/results") else []
        if cached:
            raise Failure(f"libcni's cache still holds {cached} after --rm")
        veths = [ln for ln in run(["ip", "-o", "link"]).stdout.splitlines() if "veth" in ln]
        if veths:
            raise Failure(f"veth left in the host namespace: {veths}")
        mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                  if " /run/netns/" in ln]
        if mounts:
            raise Failure(f"namespace bind mounts left: {mounts}")
        print("nothing left: no endpoint, no namespace record, reconcile in sync", flush=True)

    def stop_daemons(self) -> None:
        from nsnet.dns import stop_daemons

        if self.state.is_dir():
            stop_daemons(str(self.state))

    def daemon_pids(self) -> set[int]:
        """nsnet's DNS server and CNI agents, from their pid files."""
        pids = set()
        for path in [*self.state.glob("cni*.pid"), self.state / "dns.pid"]:
            try:
                text = path.read_text().strip()
            except OSError:
                continue
            if text.isdigit():
                pids.add(int(text))
        return pids


def wait_for(what: str, cond, timeout: float, procs: list[subprocess.Popen] = ()) -> None:
    """Poll COND; fail early if one of PROCS (the ctr clients) died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                out = p.stdout.read() if p.stdout else ""
                raise Failure(f"{what}: {p.args[-4]} exited {p.returncode}: {out}")
        time.sleep(0.2)
    raise Failure(f"{what}: not within {timeout:.0f} s")


def start_container(ctrd: Containerd, rootfs: Path, cid: str, script: str) -> subprocess.Popen:
    return subprocess.Popen(ctrd.run_argv(rootfs, cid, script), env=ctrd.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: dict[str, subprocess.Popen], timeout: float) -> None:
    """Wait for every ``ctr run --rm`` to return; each must exit 0."""
    end = time.monotonic() + timeout
    bad = {}
    for cid, p in procs.items():
        try:
            out, _ = p.communicate(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            bad[cid] = f"still running after {timeout:.0f} s: {out}"
            continue
        if p.returncode != 0:
            bad[cid] = f"exit {p.returncode}: {out.strip()}"
    if bad:
        raise Failure(f"ctr run --cni --rm failed: {bad}")


# ------------------------------------------------------------ scenarios
WAIT_STOP = "while [ ! -e /shared/stop ]; do sleep 0.1; done"


def scenario_pair(ctrd: Containerd, nsnet: Nsnet, rootfs: Path, shared: Path) -> None:
    """Two containers: addresses, ping each other and the gateway, resolve
    each other by name (the name ctr gives the plugin: CNI_CONTAINERID,
    "<containerd namespace>-<container id>"), in both directions."""
    ids = {"a": f"web{TAG}", "b": f"db{TAG}"}
    names = {k: f"{CTR_NS}-{v}" for k, v in ids.items()}
    procs = {}
    for me, peer in (("a", "b"), ("b", "a")):
        script = (f"ip -4 -o addr show eth0 > /shared/{me}.addr; "
                  f"while [ ! -e /shared/go ]; do sleep 0.1; done; "
                  f"{{ ping -c2 -W10 $(cat /shared/gateway) && ping -c2 -W10 {names[peer]} && "
                  f"nslookup {names[peer]} && cat /etc/resolv.conf; }} > /shared/{me}.log 2>&1; "
                  f"echo $? > /shared/{me}.rc; {WAIT_STOP}")
        step(f"ctr run --cni --rm {ids[me]}")
        procs[me] = start_container(ctrd, rootfs, ids[me], script)
    plist = list(procs.values())
    wait_for("both containers have an address",
             lambda: all((shared / f"{k}.addr").exists() for k in ids), 90, plist)
    addrs = {k: (shared / f"{k}.addr").read_text().split()[3] for k in ids}
    print(f"addresses: {addrs}", flush=True)
    gateway = nsnet.gateway()
    subnet = ipaddress.ip_network(addrs["a"], strict=False)
    if ipaddress.ip_address(gateway) not in subnet or \
            ipaddress.ip_interface(addrs["b"]).ip not in subnet:
        raise Failure(f"addresses {addrs} and gateway {gateway} are not on one subnet")
    if addrs["a"] == addrs["b"]:
        raise Failure(f"both containers got {addrs['a']}")
    eps = nsnet.endpoints()
    if sorted(e["address"] for e in eps) != sorted(addrs.values()):
        raise Failure(f"nsnet's endpoints {eps} are not the containers' {addrs}")
    step("each pings the gateway and the other by name, and resolves it")
    (shared / "gateway").write_text(gateway)
    (shared / "go").touch()
    wait_for("both containers probed", lambda: all((shared / f"{k}.rc").exists() for k in ids),
             60, plist)
    for k in ids:
        log = (shared / f"{k}.log").read_text()
        rc = (shared / f"{k}.rc").read_text().strip()
        print(f"[{ids[k]}] rc={rc}\n{log}", flush=True)
        if rc != "0":
            raise Failure(f"{ids[k]} could not reach the gateway or resolve/ping its peer:\n{log}")
        peer_ip = str(ipaddress.ip_interface(addrs["b" if k == "a" else "a"]).ip)
        if peer_ip not in log.split("Name:")[-1]:
            raise Failure(f"{ids[k]} resolved its peer to something else than {peer_ip}:\n{log}")
    step("the containers exit; ctr run --rm removes them")
    (shared / "stop").touch()
    finish(procs, 60)


def scenario_parallel(ctrd: Containerd, nsnet: Nsnet, rootfs: Path, shared: Path, n: int) -> None:
    """N ``ctr run --cni --rm`` at once: N distinct addresses, all gone."""
    ids = [f"p{TAG}x{i}" for i in range(n)]
    step(f"{n} ctr run --cni --rm started in parallel")
    t0 = time.monotonic()
    procs = {cid: start_container(ctrd, rootfs, cid,
                                  f"ip -4 -o addr show eth0 > /shared/{cid}.addr; {WAIT_STOP}")
             for cid in ids}
    wait_for(f"{n} containers have an address",
             lambda: all((shared / f"{c}.addr").exists() for c in ids), 600, list(procs.values()))
    print(f"{n} containers up in {time.monotonic() - t0:.1f} s", flush=True)
    addrs = {c: (shared / f"{c}.addr").read_text().split()[3] for c in ids}
    if len(set(addrs.values())) != n:
        dup = sorted(a for a in addrs.values() if list(addrs.values()).count(a) > 1)
        raise Failure(f"{n} containers, {len(set(addrs.values()))} addresses; shared: {dup}")
    eps = nsnet.endpoints()
    if len(eps) != n or {e["address"] for e in eps} != set(addrs.values()):
        raise Failure(f"nsnet has {len(eps)} endpoints for {n} containers")
    print(f"{n} distinct addresses, {n} endpoints", flush=True)
    step("all exit; --rm removes them")
    (shared / "stop").touch()
    finish(procs, 600)


# ------------------------------------------------------------- teardown
def sandbox_processes() -> dict[int, str]:
    """Every live process of this PID namespace but this one (our /proc is
    the sandbox's: --mount-proc)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            out[int(pid)] = cmd
    return out


def reap() -> None:
    """As PID 1 we inherit orphans (shims, daemons): collect the exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def cgroups_left(ids_prefix: str) -> list[str]:
    """runc's cgroups for our containers (named after their IDs)."""
    left = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        left += [os.path.join(root, d) for d in dirs if d.startswith(ids_prefix)]
    return left


def main() -> int:
    work, readme, scenario = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    python = sys.executable
    if os.getpid() != 1:
        raise SystemExit("run me as PID 1 of a sandbox (see test_containerd.py)")
    private_mounts(work)
    conf = readme_conflist(readme, work)
    install_cni(work, python, conf)
    print(f"CNI configuration (README's example):\n{json.dumps(conf)}", flush=True)
    nsnet = Nsnet(work, python)
    subnet = ipaddress.ip_network(conf["plugins"][0]["subnet"])
    rootfs = busybox_rootfs(work, str(next(subnet.hosts())))
    shared = work / "shared"
    shared.mkdir()
    ctrd = Containerd(work)
    failure: Exception | None = None
    try:
        if scenario == "pair":
            scenario_pair(ctrd, nsnet, rootfs, shared)
        else:
            scenario_parallel(ctrd, nsnet, rootfs, shared, n)
        tasks, containers = ctrd.leftovers()
        if tasks or containers:
            raise Failure(f"ctr run --rm left tasks {tasks} / containers {containers}")
        nsnet.assert_nothing_left()
    except Exception as exc:  # reported below, after the teardown
        failure = exc
        (shared / "stop").touch()
        ctrd.remove_everything()
    finally:
        ctrd.stop()
    time.sleep(0.5)
    reap()
    daemons = nsnet.daemon_pids()
    stray = {p: c for p, c in sandbox_processes().items() if p not in daemons}
    nsnet.stop_daemons()
    reap()
    if failure is None and stray:
        failure = Failure(f"processes outlived containerd and ctr run --rm: {stray}")
    cg = [d for prefix in (f"p{TAG}x", f"web{TAG}", f"db{TAG}") for d in cgroups_left(prefix)]
    if failure is None and cg:
        failure = Failure(f"cgroups left: {cg}")
    if failure is not None:
        print(f"containerd log (tail):\n{(work / 'containerd.log').read_text()[-3000:]}")
        print(f"FAILED: {failure}", flush=True)
        return 1
    print("CTR OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

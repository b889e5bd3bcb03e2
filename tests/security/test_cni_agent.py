"""Attacks on the CNI launcher, its client and the resident agent (issues
#12 and #14): foreign namespaces, hostile working directories, forged state
directories and sockets, stalled peers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cnitools import REF, agent_processes


def install_launcher(directory: Path) -> str:
    subprocess.run([sys.executable, "-m", "nsnet.cli", "cni", "install", "--dir",
                    str(directory)], check=True, capture_output=True)
    return str(directory / "nsnet")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NSNET_"))}
    env.update(extra)
    return env


def agent_pids(state: str) -> list[int]:
    """Running agents of a state directory, from their own pid files."""
    from nsnet.dns import _is_nsnet

    pids = []
    for name in os.listdir(state):
        if name.startswith("cni") and name.endswith(".pid"):
            text = Path(state, name).read_text().strip()
            if text.isdigit() and _is_nsnet(int(text)):
                pids.append(int(text))
    return pids


def stop_agents(state: str, *netns_dirs: Path) -> None:
    """Stop the agents (by their pid files), then unmount what the callers'
    ADDs left in the netns directories (the sandboxes die with them)."""
    from nsnet.dns import stop_daemons
    from nsnet.kernel.netns import umount

    if os.path.isdir(state):
        stop_daemons(state)
    for d in netns_dirs:
        if not d.is_dir():
            continue
        for path in [str(p) for p in d.iterdir()] + [str(d)]:
            while True:  # stacked mounts are possible: peel them all
                try:
                    umount(path)
                except OSError:
                    break


# A caller in a sandbox of its own: `unshare` gives it its own network
# namespace (and with --mount its own mount namespace); a "container" is a
# sleeping process with a network namespace of its own.  Prints the result,
# then the sandbox's links.
CALLER = r"""
set -e
ip link set lo up
unshare --net -- sleep 60 & ctr=$!
for i in $(seq 100); do
  [ "$(readlink /proc/$ctr/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.01
done
CNI_NETNS=/proc/$ctr/ns/net "$1" < "$2" > "$3" || true
ip -o link show > "$4"
kill $ctr
"""


def caller(flags: list[str], launcher: str, config: dict, tmp: Path, tag: str,
           cid: str) -> tuple[dict, str]:
    conf_path, out_path, links_path = (tmp / f"{tag}.{x}" for x in ("json", "out", "links"))
    conf_path.write_text(json.dumps(config))
    env = clean_env(CNI_COMMAND="ADD", CNI_CONTAINERID=cid, CNI_IFNAME="eth0", CNI_PATH=REF)
    proc = subprocess.run(["unshare", *flags, "--", "sh", "-c", CALLER, "caller", launcher,
                           str(conf_path), str(out_path), str(links_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out_path.read_text()), links_path.read_text()


def net_config(name: str, subnet: str, state: str, netns_dir: str, bridge: str) -> dict:
    # no hostNetns: the caller's own network namespace is nsnet's host
    return {"cniVersion": "1.0.0", "name": name, "type": "nsnet", "subnet": subnet,
            "bridge": bridge, "dns": False, "stateDir": state, "netnsDir": netns_dir,
            "etcNetnsDir": netns_dir + "-etc"}


@pytest.fixture
def short_tmp():
    """A short directory for state: the agent's socket is STATE/cni/cni-MNT-NET.sock
    and AF_UNIX paths stop at 107 bytes; under pytest-xdist a test's tmp_path
    (.../popen-gw0/test_agent_refuses_a_foreign_n0/state/cni/...) passes that,
    and the client then falls back to running in-process -- not what these
    tests attack."""
    path = Path(tempfile.mkdtemp(prefix="nsc", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.attack(
    attack="a caller in another sandbox (own mount and network namespaces) uses the same "
           "state directory path while an agent started by a first sandbox runs",
    promise="an agent acts only for callers in its own mount and network namespaces; "
            "every other caller's objects are made in that caller's namespaces",
    defect="#14.2")
def test_agent_never_serves_another_sandbox(tmp_path: Path, short_tmp: Path) -> None:
    state = str(short_tmp / "state")
    launcher = install_launcher(tmp_path / "bin")
    try:
        conf_a = net_config("neta", "10.77.1.0/24", state, str(tmp_path / "ns-a"), "nsbra")
        res_a, links_a = caller(["--net"], launcher, conf_a, tmp_path, "a", "ca")
        assert res_a.get("ips"), res_a
        assert "nsbra" in links_a
        [agent] = agent_pids(state)  # A's call started the agent (in A's namespaces)
        conf_b = net_config("netb", "10.77.2.0/24", state, str(tmp_path / "ns-b"), "nsbrb")
        res_b, links_b = caller(["--mount", "--net", "--propagation", "private"], launcher,
                                conf_b, tmp_path, "b", "cb")
        assert res_b.get("ips"), res_b
        assert "nsbrb" in links_b, links_b  # B's bridge in B's own namespace ...
        agent_links = subprocess.run(["nsenter", "-t", str(agent), "-n", "ip", "-o", "link"],
                                     capture_output=True, text=True, check=True).stdout
        assert "nsbrb" not in agent_links  # ... never in A's agent's
        # B either ran in-process or got an agent of its own: never A's
        assert agent in agent_pids(state)
        for pid in agent_pids(state):
            if pid != agent:
                assert os.stat(f"/proc/{pid}/ns/net").st_ino != \
                    os.stat(f"/proc/{agent}/ns/net").st_ino
    finally:
        stop_agents(state, tmp_path / "ns-a", tmp_path / "ns-b")


FORGED_CONNECT = r"""
import socket, sys
from nsnet.cni.client import request
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
try:  # the agent may answer and close before the request is all sent
    s.sendall(request({"CNI_COMMAND": "STATUS"}, sys.argv[2].encode()))
    s.shutdown(socket.SHUT_WR)
except BrokenPipeError:
    pass
data = b""
while chunk := s.recv(65536):
    data += chunk
print(int.from_bytes(data[:4], "big", signed=True))
"""


@pytest.mark.attack(
    attack="a process in another network namespace connects straight to a running agent's "
           "socket and sends it a command",
    promise="the agent refuses callers whose mount or network namespace is not its own",
    defect="#14.2")
def test_agent_refuses_a_foreign_namespace_connection(tmp_path: Path, short_tmp: Path) -> None:
    from nsnet.cni.client import REFUSED, agent_dir

    state = str(short_tmp / "state")
    launcher = install_launcher(tmp_path / "bin")
    try:
        conf = net_config("neta", "10.77.3.0/24", state, str(tmp_path / "ns"), "nsbrc")
        conf["cniVersion"] = "1.1.0"
        env = clean_env(CNI_COMMAND="STATUS", CNI_PATH=REF)
        proc = subprocess.run(["unshare", "--net", "--", launcher], input=json.dumps(conf),
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(agent_pids(state)) == 1
        [sock] = [n for n in os.listdir(agent_dir(state)) if n.endswith(".sock")]
        # from the test's own network namespace (another one than the agent's)
        proc = subprocess.run([sys.executable, "-c", FORGED_CONNECT,
                               os.path.join(agent_dir(state), sock),
                               json.dumps(conf)], capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip() == str(REFUSED), proc.stdout + proc.stderr
        # the legitimate path still works: the launcher runs it in-process
        proc = subprocess.run([launcher], input=json.dumps(conf), capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        stop_agents(state, tmp_path / "ns")


# ------------------------------------------------- the plugin in a sandbox
def box_conf(box, **extra) -> dict:
    return {"cniVersion": "1.0.0", "name": "cnet", "type": "nsnet", "subnet": "10.88.0.0/24",
            "stateDir": box.state_dir, "netnsDir": box.netns_dir, "hostNetns": box.host_path,
            "etcNetnsDir": box.etc_dir, **extra}


def run_cni(argv: list[str], command: str, config: dict | str, cid: str = "c1",
            netns: str = "", cwd: str | None = None, **env: str):
    full = clean_env(CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_IFNAME="eth0",
                     CNI_PATH=REF, CNI_NETNS=netns, **env)
    stdin = config if isinstance(config, str) else json.dumps(config)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=full,
                          timeout=120, cwd=cwd)
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = proc.stdout
    return proc.returncode, out, proc.stderr


def hostile_tree(base: Path) -> tuple[Path, Path]:
    """A directory whose ``nsnet`` package (and user site) records being imported."""
    marker = base / "IMPORTED"
    for pkg in (base / "cwd" / "nsnet",
                base / "userbase" / "lib" / f"python{sys.version_info.major}."
                f"{sys.version_info.minor}" / "site-packages" / "nsnet"):
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            f"import sys; open({str(marker)!r}, 'a').write(f'{{__file__}} {{sys.argv}}\\n')\n")
        for sub in ("cni", "dns"):
            (pkg / sub).mkdir()
            (pkg / sub / "__init__.py").write_text("")
    return base / "cwd", marker


@pytest.mark.attack(
    attack="run the CNI plugin (launcher, agent start, in-process fallback) from a working "
           "directory, PYTHONPATH and user site holding a package named nsnet",
    promise="no helper process nsnet starts imports code from the caller's working "
            "directory, PYTHONPATH or user site",
    defect="#12.1")
def test_hostile_cwd_never_imported(sandbox, tmp_path: Path) -> None:
    box = sandbox
    cwd, marker = hostile_tree(tmp_path / "evil")
    launcher = install_launcher(tmp_path / "bin")
    hostile = {"PYTHONPATH": str(cwd), "PYTHONUSERBASE": str(tmp_path / "evil" / "userbase"),
               "PYTHONSTARTUP": str(cwd / "nsnet" / "__init__.py")}
    try:
        ns = box.foreign_netns(box.name("h"))
        path = os.path.join(box.netns_dir, ns)
        # the launcher starts the agent: the agent must not import the hostile package
        rc, out, err = run_cni([launcher], "ADD", box_conf(box), netns=path, cwd=str(cwd),
                               **hostile)
        assert rc == 0, (out, err)
        assert agent_pids(box.state_dir)
        # the in-process fallback (a bad NSNET_ variable forces it)
        rc, out, err = run_cni([launcher], "ADD", box_conf(box), cid="c2", netns=path,
                               cwd=str(cwd), NSNET_CNI_AGENT_IDLE="abc", **hostile)
        assert rc != 0 and out["code"] == 4, (out, err)
        # the plugin's own decode-error path runs in-process too
        rc, out, err = run_cni([launcher], "ADD", "{not json", cwd=str(cwd), **hostile)
        assert out["code"] == 6, (out, err)
        assert not marker.exists(), marker.read_text()
        rc, out, err = run_cni([launcher], "DEL", box_conf(box), netns=path, cwd=str(cwd),
                               **hostile)
        assert rc == 0 and not marker.exists(), (out, err)
    finally:
        stop_agents(box.state_dir)


@pytest.mark.attack(
    attack="hand the launcher input it cannot parse (no stateDir readable)",
    promise="an unparseable call is answered with the spec's decode error and starts no "
            "long-lived agent on the default state directory",
    defect="#14.3")
def test_unparseable_input_starts_no_default_agent(tmp_path: Path) -> None:
    launcher = install_launcher(tmp_path / "bin")
    before = set(agent_processes("/var/lib/nsnet"))
    for text in ("{not json", "[1, 2]", '{"stateDir": ', "", '{"a": "\\'):
        rc, out, err = run_cni([launcher], "ADD", text)
        assert rc != 0 and out["code"] == 6, (text, out, err)
    time.sleep(0.3)
    assert set(agent_processes("/var/lib/nsnet")) <= before


class FakeAgent:
    """A listening socket playing an agent: records whether anyone connects."""

    def __init__(self, path: str, owner: int = 0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        os.chown(path, owner, owner)
        self.sock.setblocking(False)

    def contacted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.mark.attack(
    attack="put a stateDir under args (and an unprivileged user's directory and socket as "
           "stateDir) so the launcher talks to a socket the attacker controls",
    promise="the launcher reads only the plugin's own top-level stateDir and talks only to "
            "root's socket in a root-owned 0700 directory",
    defect="#12.9")
def test_launcher_trusts_no_foreign_socket(sandbox, tmp_path: Path, short_tmp: Path) -> None:
    from nsnet.cni.client import socket_name

    box = sandbox
    launcher = install_launcher(tmp_path / "bin")
    nobody = 65534

    def state_dir(name: str, mode: int, owner: int, cni_mode: int, cni_owner: int) -> Path:
        state = short_tmp / name
        (state / "cni").mkdir(parents=True)
        for path, m, uid in ((state, mode, owner), (state / "cni", cni_mode, cni_owner)):
            os.chmod(path, m)
            os.chown(path, uid, uid)
        return state

    evil = state_dir("evil", 0o777, nobody, 0o700, nobody)  # a user's directory
    rootdir = state_dir("root0700", 0o700, 0, 0o700, 0)  # root's, a user's socket in it
    open_cni = state_dir("opencni", 0o755, 0, 0o777, 0)  # root's, cni/ open to all
    fakes = [FakeAgent(str(evil / "cni" / socket_name()), nobody),
             FakeAgent(str(rootdir / "cni" / socket_name()), nobody),
             FakeAgent(str(open_cni / "cni" / socket_name()), 0)]
    try:
        ns = box.foreign_netns(box.name("s"))
        path = os.path.join(box.netns_dir, ns)
        nested = box_conf(box, args={"stateDir": str(evil)})
        # the nested key comes first in the text, where a naive scan finds it
        nested_first = json.dumps({"args": {"stateDir": str(evil)}})[:-1] + ", " \
            + json.dumps(box_conf(box))[1:]
        rc, out, err = run_cni([launcher], "ADD", nested_first, netns=path)
        assert rc == 0, (out, err)  # the legitimate path works ...
        assert not fakes[0].contacted()  # ... and never through the nested stateDir
        rc, out, err = run_cni([launcher], "DEL", nested, netns=path)
        assert rc == 0, (out, err)
        for fake, state in zip(fakes, (evil, rootdir, open_cni), strict=True):
            run_cni([launcher], "STATUS", box_conf(box, cniVersion="1.1.0",
                                                   stateDir=str(state)))
            assert not fake.contacted(), state
    finally:
        for fake in fakes:
            fake.close()
        stop_agents(box.state_dir)


@pytest.mark.attack(
    attack="connect to the agent, send 2 bytes and wait; and play an agent that accepts "
           "a request and never answers",
    promise="a stalled peer delays no other CNI call: the agent reads each request under "
            "a deadline in its own thread, and the client gives up on a silent agent and "
            "runs the plugin itself",
    defect="#12.10")
def test_stalled_peers_block_nobody(sandbox, tmp_path: Path) -> None:
    from nsnet.cni.client import ACK_WAIT, agent_dir, socket_name

    box = sandbox
    launcher = install_launcher(tmp_path / "bin")
    stalled: list[socket.socket] = []
    try:
        ns = [box.foreign_netns(box.name(f"t{i}")) for i in range(3)]
        paths = [os.path.join(box.netns_dir, n) for n in ns]
        rc, out, err = run_cni([launcher], "ADD", box_conf(box), cid="t0", netns=paths[0])
        assert rc == 0, (out, err)  # the agent runs now
        for _ in range(5):  # peers that send 2 bytes of a request and wait
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(os.path.join(agent_dir(box.state_dir), socket_name()))
            s.sendall(b"\x00\x00")
            stalled.append(s)
        t0 = time.monotonic()
        rc, out, err = run_cni([launcher], "ADD", box_conf(box), cid="t1", netns=paths[1])
        assert rc == 0, (out, err)
        assert time.monotonic() - t0 < 5, "a stalled peer delayed the next call"
        # a silent "agent" (root's socket, our namespaces, never acknowledges)
        stop_agents(box.state_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(agent_dir(box.state_dir), socket_name()))
        fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fake.bind(os.path.join(agent_dir(box.state_dir), socket_name()))
        fake.listen(8)
        stalled.append(fake)
        t0 = time.monotonic()
        rc, out, err = run_cni([launcher], "ADD", box_conf(box), cid="t2", netns=paths[2])
        took = time.monotonic() - t0
        assert rc == 0, (out, err)  # done in-process after the deadline
        assert took < ACK_WAIT + 30, took
        assert box.cli("reconcile", "--dry-run").returncode == 0
    finally:
        for s in stalled:
            s.close()
        stop_agents(box.state_dir)

"""--explain must be true, not a story: the replay differential.

A command runs with ``--explain`` in one sandbox; the commands it printed
are replayed with the real tools (ip, bridge, tc, sysctl, nft -f) in a
second, fresh sandbox; the kernel state of both is dumped with the real
tools (tests/statedump.py) and must be equal.

How the replay runs: in a private mount namespace (util-linux ``unshare
-m``), a tmpfs over /run with the sandbox's netns directory bound on
/run/netns -- so ``ip -n NAME`` and ``ip netns add NAME`` mean the sandbox's
namespaces and nothing of the machine's /run/netns is seen or touched --
and inside the sandbox's host namespace (``nsenter --net``), which is what
commands without ``-n`` mean.  The namespaces the replay makes live only in
that mount namespace, so the state is dumped there too, before it exits;
the nsnet side is dumped the same way.  Paths of the first sandbox in the
script (its etc-netns directory, for resolv.conf) are rewritten to the
second's.

Normalised, because it cannot match, and nothing else:
- ifindexes (links are compared by name; a veth's peer by name when it is
  in the same namespace, else only that it is elsewhere; link-netnsids are
  allocated lazily, in an order of first use);
- MAC addresses nsnet does not set (host veth ends, topology veths: the
  kernel draws them at random); the ones it sets -- bridges, endpoint
  interfaces -- are printed in the script and compared;
- IPv6 link-local addresses and their routes (derived from those random
  MACs; every other IPv6 address and main-table route, and the IPv6
  sysctls nsnet writes, are compared);
- carrier/operstate (lags behind; the admin UP flag is compared).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Sandbox

ROOT = Path(__file__).resolve().parents[2]
DUMP = str(ROOT / "tests" / "statedump.py")
MARK = "# nsnet --explain"


@pytest.fixture
def fresh_box(tmp_path_factory: pytest.TempPathFactory):
    """Makes fresh sandboxes for replays; closes them all afterwards."""
    boxes: list[Sandbox] = []

    def make() -> Sandbox:
        boxes.append(Sandbox(tmp_path_factory.mktemp("replay")))
        return boxes[-1]

    try:
        yield make
    finally:
        for box in boxes:
            box.close()


@pytest.fixture
def replay_box(fresh_box) -> Sandbox:
    return fresh_box()


def explained(box: Sandbox, *args: str) -> str:
    proc = box.cli("--explain", *args, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert MARK in proc.stdout, proc.stdout
    return proc.stdout


def script_of(stdout: str) -> str:
    """The commands of an --explain output: the block after the mark, and
    (nsnet lab) the indented 'nsnet sent' sections beside each step."""
    lines = stdout.splitlines()
    out, inside = [], False
    for line in lines[: lines.index(next(ln for ln in lines if ln.startswith(MARK)))]:
        if line.strip() == "nsnet sent (equivalent commands):":
            inside = True
        elif line.strip() == "state read back:":
            inside = False
        elif inside:
            out.append(line[5:])
    out += lines[lines.index(next(ln for ln in lines if ln.startswith(MARK))):]
    return "\n".join(out) + "\n"


def in_sandbox(box: Sandbox, shell: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``shell`` (sh -c) in the sandbox's host namespace, with its netns
    directory on /run/netns, in a private mount namespace."""
    setup = ('mount -t tmpfs nsnet-replay /run && mkdir /run/netns && '
             'mount --rbind "$NETNS_DIR" /run/netns && '
             'exec nsenter --net="$HOST" sh -c "$0" replay "$@"')
    env = {"PATH": os.environ["PATH"], "NETNS_DIR": box.netns_dir, "HOST": box.host_path,
           "PY": sys.executable, "DUMP": DUMP}
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", setup,
                           shell, *args], capture_output=True, text=True, env=env, timeout=300)


def dump(box: Sandbox) -> dict:
    proc = in_sandbox(box, '"$PY" -I "$DUMP"')
    assert proc.returncode == 0, proc.stderr
    return _with_files(json.loads(proc.stdout), box)


def replay(box: Sandbox, script: str) -> dict:
    path = Path(box.base) / "replay.sh"
    path.write_text(script)
    proc = in_sandbox(box, 'sh -e "$1" >&2 && "$PY" -I "$DUMP"', str(path))
    assert proc.returncode == 0, f"the replay failed: {proc.stderr}\n--- script:\n{script}"
    return _with_files(json.loads(proc.stdout), box)


def _with_files(state: dict, box: Sandbox) -> dict:
    files = {}
    for dirpath, _dirs, names in os.walk(box.etc_dir):
        for name in names:
            path = os.path.join(dirpath, name)
            files[os.path.relpath(path, box.etc_dir)] = Path(path).read_text()
    state["etc-netns files"] = files
    return state


def normalised(state: dict, script: str) -> dict:
    for key, ns in state.items():
        if not key.startswith(("host", "netns ")):
            continue
        for link in ns["links"].values():
            if link["mac"] not in script:  # a MAC the kernel drew, not nsnet
                link["mac"] = "(random)"
    return state


def assert_same(nsnet_state: dict, replayed: dict, script: str) -> None:
    a, b = normalised(nsnet_state, script), normalised(replayed, script)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            for sub in sorted(set(a[key]) | set(b[key])):
                if a[key].get(sub) != b[key].get(sub):
                    diffs.append(f"{key} / {sub}:\n  nsnet:  {a[key].get(sub)!r}\n"
                                 f"  replay: {b[key].get(sub)!r}")
        else:
            diffs.append(f"{key}:\n  nsnet:  {a.get(key)!r}\n  replay: {b.get(key)!r}")
    assert not diffs, "the replayed commands made another state:\n" + "\n".join(diffs)


def _for_replay(script: str, source: Sandbox, target: Sandbox) -> str:
    return script.replace(str(source.base), str(target.base))


def test_lab_replays_to_the_same_state(sandbox: Sandbox, replay_box: Sandbox) -> None:
    out = explained(sandbox, "lab")
    assert "the article types:" in out and "nsnet differs:" in out
    # the peer is born inside ns1, already named eth0 (the host end in the
    # network's link group, #15); ns1 was made before this connect (step 1),
    # so the host end goes up only once its IPv6 is off: a process inside
    # could bring eth0 up at once (only namespaces a connect makes itself
    # get host ends born up)
    assert re.search(r"ip link add veth1 master mydocker0 mtu 1500 group \d+ type veth "
                     r"peer name eth0 netns ns1", out)
    assert "ip link set dev veth1 up alias nsnet:ep:" in out
    script = script_of(out)
    assert "add table ip nsnet" in script and "nft -j" not in script
    state = dump(sandbox)
    assert {"ns1", "ns2"} <= set(state["namespaces"]) and "mydocker0" in state["host"]["links"]
    assert_same(state, replay(replay_box, _for_replay(script, sandbox, replay_box)), script)


def test_the_differential_catches_a_missing_command(sandbox: Sandbox, fresh_box) -> None:
    """The comparison has teeth: one route left out of the replay is seen."""
    script = script_of(explained(sandbox, "lab"))
    route = "ip -n ns2 route add default via 172.16.1.254 dev eth0 proto boot\n"
    assert route in script
    box = fresh_box()
    with pytest.raises(AssertionError, match="netns ns2 / routes"):
        assert_same(dump(sandbox), replay(box, _for_replay(script.replace(route, ""), sandbox,
                                                           box)), script)


def test_published_ports_network_replays_create_and_remove(sandbox: Sandbox, fresh_box
                                                             ) -> None:
    replay_box = fresh_box()
    name = sandbox.name("web")
    a, b = sandbox.name("a"), sandbox.name("b")
    steps = [("network", "create", name, "--subnet", "10.77.0.0/24"),
             ("connect", name, a, "--create", "-p", "8080:80"),
             ("connect", name, b, "--create"),
             ("port", "add", name, a, "9090:90/udp")]
    script = "".join(script_of(explained(sandbox, *s)) for s in steps)
    assert "type bridge_slave hairpin on" in script
    assert "nft -f -" in script and "nft -j" not in script  # nft's syntax, replayed as such
    assert "resolv.conf" in script
    assert_same(dump(sandbox), replay(replay_box, _for_replay(script, sandbox, replay_box)),
                script)
    # and the way back: removal commands replayed after the creation ones
    undo = [("port", "rm", name, a, "9090:90/udp"), ("disconnect", name, a),
            ("network", "rm", "--force", name)]
    script += "".join(script_of(explained(sandbox, *s)) for s in undo)
    assert "ip link del" in script
    again = fresh_box()  # the whole story, creation then removal, in a fresh sandbox
    assert_same(dump(sandbox), replay(again, _for_replay(script, sandbox, again)), script)


def test_dual_stack_network_with_published_ports_replays(sandbox: Sandbox, fresh_box) -> None:
    """IPv6 (#16): the bridge's quiet-IPv6 sysctls written while it is down,
    gateway and endpoint addresses without DAD, ::/0 routes, the ip6 table
    -- the creation, then the removal, replayed."""
    name = sandbox.name("ds")
    a, b = sandbox.name("a"), sandbox.name("b")
    steps = [("network", "create", name, "--subnet", "10.78.0.0/24", "--subnet", "fd00:78::/64"),
             ("connect", name, a, "--create", "-p", "8080:80", "-p", "[::]:8443:443"),
             ("connect", name, b, "--create", "--ip6", "fd00:78::99")]
    script = "".join(script_of(explained(sandbox, *s)) for s in steps)
    assert "nodad" in script and "add table ip6 nsnet" in script
    assert "addr_gen_mode" in script and "default via fd00:78::1" in script
    state = dump(sandbox)
    assert "fd00:78::99/64" in json.dumps(state)
    box = fresh_box()
    assert_same(state, replay(box, _for_replay(script, sandbox, box)), script)
    undo = [("disconnect", name, b), ("network", "rm", "--force", name)]
    script += "".join(script_of(explained(sandbox, *s)) for s in undo)
    again = fresh_box()
    assert_same(dump(sandbox), replay(again, _for_replay(script, sandbox, again)), script)


@pytest.mark.parametrize("example", ["router-line.yaml", "three-tier.yaml"])
def test_topology_file_replays(sandbox: Sandbox, replay_box: Sandbox, example: str) -> None:
    out = explained(sandbox, "up", str(ROOT / "examples" / example))
    script = script_of(out)
    assert_same(dump(sandbox), replay(replay_box, _for_replay(script, sandbox, replay_box)),
                script)


@pytest.mark.parametrize(("build", "remove"), [
    (("lab",), ("lab", "--down")),
    (("up", str(ROOT / "examples" / "router-line.yaml")),
     ("down", str(ROOT / "examples" / "router-line.yaml"))),
])
def test_removal_replays_to_the_same_state(sandbox: Sandbox, fresh_box, build: tuple,
                                           remove: tuple) -> None:
    """Build, then remove: the two scripts, replayed one after the other in a
    fresh sandbox, leave what nsnet left (namespaces, bridge, tables gone)."""
    script = script_of(explained(sandbox, *build))
    script += script_of(explained(sandbox, *remove))
    assert "ip netns del" in script
    state = dump(sandbox)
    assert state["namespaces"] == []
    box = fresh_box()
    assert_same(state, replay(box, _for_replay(script, sandbox, box)), script)


def test_reconcile_repairs_replay_to_the_same_state(sandbox: Sandbox, fresh_box) -> None:
    """Meddle (a host veth deleted, forwarding off) in both sandboxes the same
    way; nsnet's repair, replayed, repairs the replay sandbox identically."""
    name, a = sandbox.name("rec"), sandbox.name("a")
    script = "".join(script_of(explained(sandbox, *s)) for s in (
        ("network", "create", name, "--subnet", "10.76.0.0/24"),
        ("connect", name, a, "--create")))
    host_if = next(line.split()[3] for line in script.splitlines()
                   if line.startswith("ip link add veth"))
    meddling = f"ip link del dev {host_if}\nsysctl -w net.ipv4.ip_forward=0\n"
    sandbox.host("sh", "-e", "-c", meddling)
    repair = script_of(explained(sandbox, "reconcile"))
    assert f"ip link add {host_if} master" in repair and "net.ipv4.ip_forward=1" in repair
    box = fresh_box()
    whole = script + meddling + repair
    assert_same(dump(sandbox), replay(box, _for_replay(whole, sandbox, box)), whole)


def test_dry_run_changes_nothing_and_leaves_no_copy(sandbox: Sandbox) -> None:
    name = sandbox.name("dry")
    assert sandbox.cli("network", "create", name, "--subnet", "10.78.0.0/24").returncode == 0
    before = sandbox.fingerprint()
    copies = set(glob.glob("/tmp/nsnet-explain-*"))
    proc = sandbox.cli("connect", name, sandbox.name("n"), "--create", "--explain",
                       "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and "ip link add veth" in proc.stdout
    assert f"ip netns add {sandbox.name('n')}" in proc.stdout
    assert sandbox.fingerprint() == before
    assert set(glob.glob("/tmp/nsnet-explain-*")) <= copies  # the copy is gone
    refused = sandbox.cli("reconcile", "--explain", "--dry-run")
    assert refused.returncode == 2 and "cannot show repairs" in refused.stderr

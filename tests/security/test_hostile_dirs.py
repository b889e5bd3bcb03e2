"""An unprivileged local user against the directories nsnet writes as root.

The attacker is a real user made for the test (``useradd``, removed with
``userdel -r``).  It owns or can write the state directory, the etc-netns
directory or a namespace's ``/etc/netns/NS`` folder, or plants symlinks
there, hoping root's nsnet writes through them into a victim file (a
stand-in for /etc/shadow made by the test) or trusts records it forged.
Each test asserts the victim is untouched and nsnet refused with one clear
line -- and that the legitimate set-up still works.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REFUSED = 7  # PermissionDenied
PROMISE_DIRS = ("nsnet refuses a state/netns/etc-netns directory another user owns or can "
                "write, as ssh's StrictModes does, and changes nothing")
PROMISE_SYMLINK = "nsnet never writes through a symlink (pid/lock files, resolv.conf, temporaries)"


@dataclass
class Attacker:
    name: str
    uid: int
    gid: int

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command as the attacker (no root, no supplementary groups)."""
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                               "--clear-groups", *argv], capture_output=True, text=True,
                              timeout=30)


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    name = f"nsatk{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    try:
        out = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True)
        gid = subprocess.run(["id", "-g", name], capture_output=True, text=True, check=True)
        yield Attacker(name, int(out.stdout), int(gid.stdout))
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        assert subprocess.run(["id", name], capture_output=True).returncode != 0


@pytest.fixture
def public() -> Iterator[Path]:
    """A directory the attacker can reach (pytest's own tmp dirs are root-only)."""
    path = Path(f"/tmp/nsnet-sec-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only file standing in for /etc/shadow."""
    path = tmp_path / "victim" / "shadow"
    path.parent.mkdir(mode=0o700)
    path.write_text("root:$6$secret:19000:0:99999:7:::\n")
    path.chmod(0o600)
    return path


def _digest(path: Path) -> tuple[str, int, int, int]:
    st = path.lstat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode, st.st_uid, st.st_size


def _cli(box, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*box.cli_argv(), *args], env={**box.env(), **env},
                          capture_output=True, text=True, timeout=60)


def _refused(res: subprocess.CompletedProcess[str], what: str, why: str) -> None:
    err = res.stderr.strip()
    assert res.returncode == REFUSED, (res.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"nsnet: error: {what} ") and why in err, err
    assert "nsnet refuses to use it (as ssh's StrictModes)" in err, err


def _hostile_dir(parent: Path, attacker: Attacker, how: str) -> Path:
    """A directory the attacker controls: owns it, or can write it."""
    path = parent / f"hostile-{how}"
    path.mkdir()
    if how == "owned":
        os.chown(path, attacker.uid, attacker.gid)
        path.chmod(0o700)
    elif how == "group":
        os.chown(path, 0, attacker.gid)
        path.chmod(0o770)
    else:  # world-writable, even sticky: the directory itself must be root's alone
        path.chmod(0o1777)
    return path


# ------------------------------------------------------------- state dir
@pytest.mark.attack(attack="an unprivileged user owns, or can write, nsnet's state directory "
                           "and waits for root's nsnet to use it (forged records, symlinks)",
                    promise=PROMISE_DIRS, defect="#12.8")
@pytest.mark.parametrize("how", ["owned", "group", "world"])
def test_state_dir_of_another_user_is_refused(sandbox, tmp_path, attacker, how) -> None:
    state = _hostile_dir(tmp_path, attacker, how)
    before = sandbox.fingerprint()
    for args in (["network", "ls"], ["network", "create", "n1", "--subnet", "192.0.2.0/28"]):
        res = _cli(sandbox, *args, NSNET_STATE_DIR=str(state))
        _refused(res, "state directory", "owned by uid" if how == "owned" else "writable by")
    assert os.listdir(state) == []  # no database, lock or pid file made there
    assert sandbox.fingerprint() == before
    os.chown(state, 0, 0)  # the legitimate set-up: root's, not writable by others
    state.chmod(0o700)
    res = _cli(sandbox, "network", "create", "n1", "--subnet", "192.0.2.0/28",
               NSNET_STATE_DIR=str(state))
    assert res.returncode == 0, res.stderr
    assert _cli(sandbox, "network", "rm", "n1", NSNET_STATE_DIR=str(state)).returncode == 0


@pytest.mark.attack(attack="in a sticky world-writable directory (like /tmp) the attacker "
                           "pre-creates nsnet's state directory, or plants a symlink there "
                           "to a directory of its choice",
                    promise=PROMISE_DIRS, defect="#12.8")
@pytest.mark.parametrize("plant", ["mkdir", "symlink"])
def test_state_dir_planted_in_a_sticky_dir_is_refused(sandbox, tmp_path, attacker, public,
                                                      plant) -> None:
    public = public / "sticky"
    public.mkdir()
    public.chmod(0o1777)  # as /tmp
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)  # even a root-owned target: the symlink is the attacker's
    state = public / "nsnet-state"
    argv = ["mkdir", str(state)] if plant == "mkdir" else ["ln", "-s", str(target), str(state)]
    assert attacker.run(*argv).returncode == 0
    res = _cli(sandbox, "network", "ls", NSNET_STATE_DIR=str(state))
    _refused(res, "state directory", "owned by uid" if plant == "mkdir"
             else f"goes through the symlink {state} owned by uid {attacker.uid}")
    assert os.listdir(target) == []
    # legitimate: root's own directory in the same sticky parent, and a root-owned symlink
    mine = public / "root-state"
    mine.mkdir(mode=0o700)
    assert _cli(sandbox, "network", "ls", NSNET_STATE_DIR=str(mine)).returncode == 0
    link = public / "root-link"
    link.symlink_to(target)
    assert _cli(sandbox, "network", "ls", NSNET_STATE_DIR=str(link)).returncode == 0
    assert "state.db" in os.listdir(target)


@pytest.mark.attack(attack="the attacker plants symlinks named as nsnet's lock file in a "
                           "state directory, pointing at a root-only file",
                    promise=PROMISE_SYMLINK, defect="#12.8")
def test_lock_file_symlink_is_never_followed(sandbox, victim) -> None:
    before = _digest(victim)
    os.makedirs(sandbox.state_dir, mode=0o700, exist_ok=True)
    os.symlink(victim, os.path.join(sandbox.state_dir, "lock"))
    res = sandbox.cli("network", "create", "n1", "--subnet", "192.0.2.0/28")
    err = res.stderr.strip()
    assert res.returncode == 9 and len(err.splitlines()) == 1, err
    assert "cannot open the state lock" in err and "symbolic links" in err, err
    assert _digest(victim) == before
    os.unlink(os.path.join(sandbox.state_dir, "lock"))  # legitimate: works once it is gone
    assert sandbox.cli("network", "create", "n1", "--subnet", "192.0.2.0/28").returncode == 0
    assert sandbox.cli("network", "rm", "n1").returncode == 0


# ------------------------------------------------------ netns / etc-netns dir
@pytest.mark.attack(attack="an unprivileged user owns, or can write, the etc-netns or netns "
                           "directory nsnet is told to use",
                    promise=PROMISE_DIRS, defect="#12.8")
@pytest.mark.parametrize("which", ["NSNET_ETC_NETNS_DIR", "NSNET_NETNS_DIR"])
@pytest.mark.parametrize("how", ["owned", "world"])
def test_etc_netns_or_netns_dir_of_another_user_is_refused(sandbox, tmp_path, attacker,
                                                           which, how) -> None:
    hostile = _hostile_dir(tmp_path, attacker, how)
    before = sandbox.fingerprint()
    for args in (["network", "ls"], ["ns", "add", sandbox.name("v")]):
        res = _cli(sandbox, *args, **{which: str(hostile)})
        what = "etc-netns directory" if which == "NSNET_ETC_NETNS_DIR" else "netns directory"
        _refused(res, what, "owned by uid" if how == "owned" else "writable by others")
    assert os.listdir(hostile) == []
    assert sandbox.fingerprint() == before


@pytest.fixture
def dns_net(sandbox) -> str:
    res = sandbox.cli("network", "create", "lan", "--subnet", "198.51.100.0/28")
    assert res.returncode == 0, res.stderr
    return "lan"


@pytest.mark.attack(attack="/etc/netns/NS is the attacker's folder (or writable by it) holding "
                           "resolv.conf -> a root-only file, and the fixed temporary name "
                           "resolv.conf.nsnet-tmp -> the same file",
                    promise=PROMISE_SYMLINK, defect="#12.8")
@pytest.mark.parametrize("plant", ["resolv.conf", "resolv.conf.nsnet-tmp"])
def test_resolv_conf_symlinks_in_a_hostile_netns_folder(sandbox, dns_net, attacker, victim,
                                                        plant) -> None:
    before = _digest(victim)
    ns = sandbox.name("vic")
    folder = Path(sandbox.etc_dir) / ns
    folder.mkdir(parents=True)
    # what the attacker does in its own folder (made here: pytest's tmp is root-only)
    os.chown(folder, attacker.uid, attacker.gid)
    (folder / plant).symlink_to(victim)
    os.lchown(folder / plant, attacker.uid, attacker.gid)
    res = sandbox.cli("connect", dns_net, ns, "--create")
    assert res.returncode == 0, res.stderr  # the network itself works
    assert res.stderr.strip().splitlines() == [
        f"nsnet: warning: {folder}: {ns} is owned or writable by another user "
        f"(uid {attacker.uid}, mode 0755); nsnet leaves it alone"], res.stderr
    assert _digest(victim) == before
    assert (folder / plant).is_symlink() and os.readlink(folder / plant) == str(victim)
    assert sandbox.cli("disconnect", dns_net, ns).returncode == 0
    assert _digest(victim) == before and (folder / plant).is_symlink()
    # legitimate: a root-owned folder gets nsnet's resolv.conf, and loses it after
    shutil.rmtree(folder)
    assert sandbox.cli("connect", dns_net, ns).returncode == 0
    text = (folder / "resolv.conf").read_text()
    assert text.startswith("# nsnet: embedded DNS of network lan") and "198.51.100.1" in text
    assert sandbox.cli("ns", "rm", ns).returncode == 0


@pytest.mark.attack(attack="a root-owned /etc/netns/NS holds resolv.conf as a symlink to a "
                           "root-only file that even starts with nsnet's own marker",
                    promise=PROMISE_SYMLINK + "; a resolv.conf nsnet did not write is kept",
                    defect="#12.8")
def test_resolv_conf_symlink_is_never_written_or_removed(sandbox, dns_net, victim) -> None:
    victim.write_text("# nsnet: embedded DNS of network lan\nnameserver 192.0.2.53\n")
    before = _digest(victim)
    ns = sandbox.name("sym")
    folder = Path(sandbox.etc_dir) / ns
    folder.mkdir(parents=True)
    (folder / "resolv.conf").symlink_to(victim)
    assert sandbox.cli("connect", dns_net, ns, "--create").returncode == 0
    assert _digest(victim) == before and (folder / "resolv.conf").is_symlink()
    assert sandbox.cli("ns", "rm", ns).returncode == 0
    assert _digest(victim) == before and (folder / "resolv.conf").is_symlink()


# --------------------------------------------------------- forged records
def _forge_delete(state_dir: str, namespaces: list[str], kind: str = "delete") -> None:
    """What a user who could write the state database would leave: a
    half-done deletion (or creation, rolled back) naming paths of its choice."""
    import json
    import time

    payload = {"endpoints": [], "namespaces": namespaces, "network": None} \
        if kind == "delete" else {"endpoints": [], "create_ns": namespaces}
    db = sqlite3.connect(os.path.join(state_dir, "state.db"))
    db.execute("INSERT INTO journal(kind, payload, created) VALUES(?, ?, ?)",
               (kind, json.dumps(payload), time.time()))
    db.commit()
    db.close()


@pytest.mark.attack(attack="a forged journal record asks nsnet to finish deleting "
                           "'namespaces' named ../../victim, and a file in the netns "
                           "directory that is not a namespace",
                    promise="nsnet deletes only what lies where it puts such things: a "
                            "namespace mount in its netns directory",
                    defect="#12.8")
def test_forged_record_never_deletes_outside_the_netns_dir(sandbox, victim) -> None:
    before = _digest(victim)
    empty = victim.parent / "empty"  # what a rolled-back creation would unlink
    empty.write_text("")
    assert sandbox.cli("network", "ls").returncode == 0  # creates the store
    notes = Path(sandbox.netns_dir) / "notes"
    notes.write_text("not a namespace\n")
    rel = os.path.relpath(victim, sandbox.netns_dir)
    _forge_delete(sandbox.state_dir, [rel, "notes", "/proc"])
    _forge_delete(sandbox.state_dir, [os.path.relpath(empty, sandbox.netns_dir)], "connect")
    res = sandbox.cli("network", "ls")
    assert res.returncode == 0, res.stderr
    assert "could not yet settle an interrupted delete" in res.stderr, res.stderr
    assert "could not yet settle an interrupted connect" in res.stderr, res.stderr
    assert _digest(victim) == before and notes.read_text() == "not a namespace\n"
    assert empty.exists()
    assert os.path.ismount("/proc")
    _forge_delete(sandbox.state_dir, ["notes"])  # in the netns dir, but a file with content
    db = sqlite3.connect(os.path.join(sandbox.state_dir, "state.db"))
    db.execute("DELETE FROM journal WHERE payload LIKE '%victim%' OR kind='connect'")
    db.commit()
    db.close()
    sandbox.cli("reconcile")
    assert notes.read_text() == "not a namespace\n"
    # legitimate: nsnet's own namespaces are still removed
    ns = sandbox.name("own")
    assert sandbox.cli("ns", "add", ns).returncode == 0
    assert sandbox.cli("ns", "rm", ns).returncode == 0
    assert not os.path.lexists(os.path.join(sandbox.netns_dir, ns))


@pytest.mark.attack(attack="a path read from a record (a CNI attachment's mount) names a "
                           "file outside the netns directory, or reaches it through ..",
                    promise="nsnet deletes only what lies where it puts such things",
                    defect="#12.8")
def test_require_inside_refuses_paths_outside_the_netns_dir(tmp_path, victim) -> None:
    from nsnet.errors import PermissionDenied
    from nsnet.state.trust import require_inside

    netns = tmp_path / "netns"
    netns.mkdir()
    for bad in (str(victim), f"{netns}/../victim/shadow", str(netns), f"{netns}/", "/proc",
                f"{netns}/..", ""):
        with pytest.raises(PermissionDenied, match="where nsnet makes such things"):
            require_inside(str(netns), bad, "CNI mount")
    assert require_inside(str(netns), f"{netns}/cni-abc-eth0") == f"{netns}/cni-abc-eth0"

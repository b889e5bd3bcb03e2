"""The DNS server nsnet starts never runs code from the caller's
environment (#12.1): it is started as ``python -I`` (isolated mode) in ``/``."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dnstools

HOSTILE_INIT = "open({marker!r}, 'a').write('{what} imported\\n')\n"


def hostile_tree(base: Path, marker: Path) -> Path:
    """A directory an attacker controls: a package ``nsnet`` (with the
    ``nsnet.dns`` module the server is started as) and a ``sitecustomize``,
    each of which leaves ``marker`` behind when Python imports it."""
    evil = base / "evil"
    (evil / "nsnet" / "dns").mkdir(parents=True)
    for rel, what in (("nsnet/__init__.py", "nsnet"), ("nsnet/dns/__init__.py", "nsnet.dns"),
                      ("nsnet/dns/__main__.py", "nsnet.dns.__main__"),
                      ("sitecustomize.py", "sitecustomize"),
                      ("usercustomize.py", "usercustomize")):
        (evil / rel).write_text(HOSTILE_INIT.format(marker=str(marker), what=what))
    return evil


@pytest.mark.attack(
    attack="run nsnet from a working directory holding a package `nsnet` and a "
           "sitecustomize, with PYTHONPATH and PYTHONUSERBASE pointing there",
    promise="helper processes nsnet starts (the DNS server) import nsnet from where it is "
            "installed, never from the caller's cwd, PYTHONPATH or user site",
    defect="#12.1")
def test_dns_server_ignores_a_hostile_cwd_and_pythonpath(sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = hostile_tree(tmp_path, marker)
    env = sandbox.env()
    env.update(PYTHONPATH=str(evil), PYTHONUSERBASE=str(evil), PYTHONSTARTUP=str(evil / "x.py"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        # the CLI itself run isolated (its own invocation is the user's choice);
        # what is under test is what nsnet starts from it
        return subprocess.run([sys.executable, "-I", "-m", "nsnet.cli", *args], cwd=evil,
                              env=env, capture_output=True, text=True, timeout=60)

    assert cli("network", "create", "safe", "--subnet", "10.97.0.0/24").returncode == 0
    for ns in ("s1", "s2"):
        proc = cli("connect", "safe", ns, "--create")
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), marker.read_text()  # nothing of the attacker's ran
    status = json.loads(Path(sandbox.state_dir, "dns.status.json").read_text())
    pid = status["pid"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-I" in argv, argv
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    msg = dnstools.dig(os.path.join(sandbox.netns_dir, "s1"), "@10.97.0.1", "s2")
    assert msg["status"] == "NOERROR" and msg["ANSWER"][0][4] == "10.97.0.3", msg["raw"]
    # (the trap works: an unisolated python started there does spring it)
    subprocess.run([sys.executable, "-c", "import nsnet"], cwd=evil, env=env, check=True)
    assert marker.exists()


@pytest.mark.attack(
    attack="stop nsnet's daemons (a sandbox's teardown, `nsnet` after a kill) in the instant "
           "after a DNS server was started and before it holds its pid file",
    promise="a DNS server nsnet started never outlives its state directory's stop",
    defect="a server still importing had no pid file yet: the stop missed it")
def test_a_server_still_starting_is_stopped_with_its_state(sandbox) -> None:
    from nsnet import kernel as k
    from nsnet.dns import PIDFILE, DnsControl, stop_daemons

    os.makedirs(sandbox.state_dir, exist_ok=True)
    host = k.open_netns(sandbox.host_path)
    try:
        pid = DnsControl(sandbox.state_dir, host)._start()
    finally:
        host.close()
    stop_daemons(sandbox.state_dir)  # at once: the server is still importing
    gone = not os.path.exists(f"/proc/{pid}") or Path(
        f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] in "ZX"
    assert gone, f"DNS server {pid} outlived the stop"
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    assert not os.path.exists(os.path.join(sandbox.state_dir, PIDFILE)) or not Path(
        sandbox.state_dir, PIDFILE).read_text().strip()

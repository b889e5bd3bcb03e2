"""A hostile working directory: an unprivileged user's folder that root runs
nsnet in, holding a package named ``nsnet`` (and modules named like nsnet's
dependencies) that would run as root if imported, and symlinks named like the
files nsnet is asked to write there.

What an attacker can do through the working directory, checked here:

* ``nsnet`` (the console script) puts its own ``bin`` directory first on
  ``sys.path``, never the working directory: immune.
* ``python -I -m nsnet.cli`` is immune (isolated mode).  Plain
  ``python -m nsnet.cli`` puts the working directory first, as for any
  ``python -m``: Python imports the hostile ``nsnet`` before nsnet's code
  runs, so nothing in nsnet can prevent it -- the bait test below shows it,
  and the README tells root to run ``nsnet`` (or ``python -I -m``).
* The helpers nsnet starts (DNS server, CNI agent) are the #12.1 tests
  (tests/security/test_dns_spawn.py, test_cni_agent.py).
* ``nsnet graph -o FILE`` writes as root where it is told: a symlink the user
  planted under that name is replaced, never written through.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BAIT_MODULES = ("nsnet", "click", "yaml", "rich", "dnslib", "sqlite3", "json")
PROMISE_CODE = "nsnet never runs code from the caller's working directory"


@pytest.fixture
def hostile_cwd() -> Iterator[tuple[Path, Path]]:
    """(the folder, the directory where the bait leaves its marks).  The
    folder belongs to nobody (uid 65534), as another user's would."""
    base = Path(f"/tmp/nsnet-cwd-{uuid.uuid4().hex[:8]}")
    cwd, marks = base / "project", base / "marks"
    cwd.mkdir(parents=True)
    marks.mkdir()
    for mod in BAIT_MODULES:
        pkg = cwd / mod
        pkg.mkdir()
        (pkg / "__init__.py").write_text(
            "import os\n"
            f"open(os.path.join({str(marks)!r}, {mod!r} + '-' + str(os.getpid())), 'w')"
            ".write(str(os.geteuid()))\n")
        for sub in ("cli", "dns", "cni"):
            (pkg / sub).mkdir()
            (pkg / sub / "__init__.py").write_text(f"import {mod}\n")
            (pkg / sub / "__main__.py").write_text(f"import {mod}\n")
    for path in [cwd, *cwd.rglob("*")]:
        os.lchown(path, 65534, 65534)
    try:
        yield cwd, marks
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _nsnet_script() -> str:
    script = Path(sys.executable).parent / "nsnet"
    assert script.exists(), script
    return str(script)


def _run(box, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=box.env(), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.attack(attack="root runs `nsnet` (the console script) or `python -I -m "
                           "nsnet.cli` in a folder holding packages named nsnet, click, "
                           "yaml, rich, dnslib, sqlite3, json",
                    promise=PROMISE_CODE, defect="#12.1")
@pytest.mark.parametrize("how", ["console-script", "python-I"])
def test_the_cli_never_imports_from_the_working_directory(sandbox, hostile_cwd, how) -> None:
    cwd, marks = hostile_cwd
    entry = [_nsnet_script()] if how == "console-script" else [sys.executable, "-I", "-m",
                                                                "nsnet.cli"]
    ns = sandbox.name("c")
    for args in (["network", "create", "n1", "--subnet", "192.0.2.0/28", "--no-dns"],
                 ["connect", "n1", ns, "--create", "--json"], ["ns", "ls"],
                 ["network", "rm", "n1", "--force"], ["ns", "rm", ns], ["--version"]):
        res = _run(sandbox, [*entry, *args], cwd)
        assert res.returncode == 0, (args, res.stderr)
    assert sorted(os.listdir(marks)) == []


@pytest.mark.attack(attack="the same folder with plain `python -m nsnet.cli` (the bait "
                           "itself: it must work, or the test above proves nothing)",
                    promise="the hostile package is really importable from that folder "
                            "(Python's own -m rule: the README says to run `nsnet`)",
                    defect="#12.1")
def test_the_bait_works_on_plain_python_m(sandbox, hostile_cwd) -> None:
    cwd, marks = hostile_cwd
    _run(sandbox, [sys.executable, "-m", "nsnet.cli", "--version"], cwd)
    assert "nsnet" in {m.split("-")[0] for m in os.listdir(marks)}


@pytest.mark.attack(attack="in the folder root runs `nsnet graph -o lab.dot|lab.svg` in, "
                           "the user plants lab.dot/lab.svg -> a root-only file",
                    promise="nsnet never writes through a symlink", defect="#12.8")
@pytest.mark.parametrize("out", ["lab.dot", "lab.mmd", "lab.svg"])
def test_graph_output_symlink_is_replaced_not_followed(sandbox, tmp_path, out) -> None:
    if out.endswith(".svg") and not shutil.which("dot"):
        pytest.fail("graphviz's dot is a test dependency (make test-deps)")
    victim = tmp_path / "shadow"
    victim.write_text("root:$6$secret:19000:0:99999:7:::\n")
    before = hashlib.sha256(victim.read_bytes()).hexdigest()
    folder = Path(f"/tmp/nsnet-cwd-{uuid.uuid4().hex[:8]}")
    folder.mkdir()
    try:
        (folder / out).symlink_to(victim)
        os.lchown(folder / out, 65534, 65534)
        os.chown(folder, 65534, 65534)
        assert sandbox.cli("network", "create", "g1", "--subnet", "192.0.2.0/28").returncode == 0
        res = _run(sandbox, [_nsnet_script(), "graph", "--live", "-o", out], folder)
        assert res.returncode == 0, res.stderr
        assert hashlib.sha256(victim.read_bytes()).hexdigest() == before
        drawn = folder / out
        assert not drawn.is_symlink() and drawn.stat().st_uid == 0
        assert b"g1" in drawn.read_bytes()  # the legitimate picture is there
        assert [p.name for p in folder.iterdir()] == [out]  # no temporary left behind
    finally:
        shutil.rmtree(folder, ignore_errors=True)

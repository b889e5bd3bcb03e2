"""Issue #14's real client: containerd 1.6's ``ctr run --cni --rm`` on nsnet's
CNI plugin with the README's configuration, in a sandbox with its own mount,
network and PID namespaces (see ctr_sandbox.py).  Run by `make test-runtime`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
DRIVER = HERE / "ctr_sandbox.py"
README = HERE.parent.parent / "README.md"
NEEDED = ("containerd", "ctr", "containerd-shim-runc-v2", "runc")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin") is None for t in NEEDED)
    and os.environ.get("CI") != "true",
    reason="containerd/runc not installed (make runtime-deps installs them)")


def in_ctr_sandbox(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """ctr_sandbox.py as PID 1 of fresh mount, network and PID namespaces.
    --kill-child: if this test times out and kills unshare, the sandbox's
    PID 1 dies, and with it every process of the sandbox (containerd, shims,
    containers, nsnet's daemons)."""
    from nsnet.dns import stop_daemons

    argv = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
            "--propagation", "private", "--",
            sys.executable, str(DRIVER), str(tmp_path), str(README), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    finally:  # (the sandbox's PIDs mean nothing here: only a daemon still
        # holding its pid file's lock is signalled, and none can be)
        if (tmp_path / "state").is_dir():
            stop_daemons(str(tmp_path / "state"))
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)
    survivors = processes_mentioning(str(tmp_path))
    assert not survivors, f"sandbox processes outlived it (containerd, shims?): {survivors}"
    return proc


def processes_mentioning(path: str) -> dict[int, str]:
    """Processes whose command line names PATH (containerd, its shims and
    nsnet's daemons all do): detection from outside, never killing."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if path in argv:
            found[int(pid)] = argv.replace("\0", " ").strip()
    return found


def test_ctr_run_cni_two_containers_ping_and_resolve_each_other(tmp_path: Path) -> None:
    proc = in_ctr_sandbox(tmp_path, "pair", timeout=300)
    assert proc.returncode == 0 and "CTR OK" in proc.stdout, proc.stdout + proc.stderr


def test_ctr_run_cni_50_containers_in_parallel(tmp_path: Path) -> None:
    proc = in_ctr_sandbox(tmp_path, "parallel", "50", timeout=900)
    assert proc.returncode == 0 and "CTR OK" in proc.stdout, proc.stdout + proc.stderr
    assert "50 distinct addresses, 50 endpoints" in proc.stdout

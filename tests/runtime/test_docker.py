"""Issue #19's real runtime: Docker's own dockerd (Debian's docker.io) drives
nsnet networks through `nsnet docker-plugin` (see docker.sh).  Run by
`make test-runtime`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("docker.sh")


@pytest.mark.skipif(shutil.which("dockerd") is None and not os.environ.get("CI"),
                    reason="dockerd not installed (make test-runtime installs docker.io)")
def test_dockerd_drives_nsnet_networks(tmp_path: Path) -> None:
    from conftest import stop_by_pidfile

    # its own mount, network and PID namespaces: when the script ends, so does
    # anything it started (dockerd, containerd, shims, the plugin) -- the script
    # also stops each by its PID and checks that nothing is left
    try:
        proc = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
                               "--propagation", "private", "--", "bash", str(SCRIPT),
                               str(tmp_path), sys.executable],
                              capture_output=True, text=True, timeout=600)
    finally:  # nsnet's own daemons for that state: by their pid files, never by name
        for daemon in ("cni.pid", "dns.pid"):
            stop_by_pidfile(str(tmp_path / "state" / daemon))
        shutil.rmtree(tmp_path / "data", ignore_errors=True)  # vfs layers: big
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)
    assert proc.returncode == 0 and "DOCKER OK" in proc.stdout, proc.stdout + proc.stderr

"""Issue #8's real runtime: podman with its CNI backend runs containers on an
nsnet network (see podman.sh); the network is dual-stack (#16, ``ipam.ranges``
with one range set per family) and every step runs over IPv4 and IPv6.  Run
by `make test-runtime`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("podman.sh")


@pytest.mark.skipif(shutil.which("podman") is None and not os.environ.get("CI"),
                    reason="podman not installed (make test-runtime installs it)")
def test_podman_containers_on_an_nsnet_network(tmp_path: Path) -> None:
    from nsnet.dns import stop_daemons

    try:
        proc = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                               "--", "bash", str(SCRIPT), str(tmp_path), sys.executable],
                              capture_output=True, text=True, timeout=300)
    finally:  # nsnet's daemons for that state: by their pid files, never by name
        if (tmp_path / "state").is_dir():  # the DNS server and every CNI agent (cni-*.pid)
            stop_daemons(str(tmp_path / "state"))
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)
    assert proc.returncode == 0 and "RUNTIME OK" in proc.stdout, proc.stdout + proc.stderr

"""Running nsnet's CNI plugin as a runtime does (a process per call, the CNI
environment, the configuration on stdin), shared by tests/e2e and
tests/security."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REF = "/usr/lib/cni"  # the reference plugins (containernetworking-plugins)
PLUGIN = [sys.executable, "-m", "nsnet.cni"]


def cni(box, command: str, config: dict | str, cid: str = "c1", netns: str | None = "",
        ifname: str = "eth0", argv: list[str] | None = None, **env: str):
    """Run a plugin; returns (exit code, parsed stdout or None, stderr)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NSNET_"))}
    full.update(CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_IFNAME=ifname, CNI_PATH=REF,
                CNI_NETNS=os.path.join(box.netns_dir, netns) if netns else "", **env)
    stdin = config if isinstance(config, str) else json.dumps(config)
    proc = subprocess.run(argv or PLUGIN, input=stdin, capture_output=True, text=True,
                          env=full, timeout=120)
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = proc.stdout
    return proc.returncode, out, proc.stderr


def ok(box, command: str, config: dict, **kw):
    """A call that must succeed; its parsed result."""
    rc, out, err = cni(box, command, config, **kw)
    assert rc == 0, (out, err)
    return out


def agent_processes(state: str) -> dict[int, str]:
    """Running CNI agents serving ``state``, pid -> argv (detection by argv
    only: nothing here signals them)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nsnet.cni.agent" in argv and state.encode() in argv:
            found[int(pid)] = b" ".join(argv).decode(errors="replace")
    return found

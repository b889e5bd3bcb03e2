"""Private directories for a runtime sandbox (a mount namespace of its own).

Runtimes write to fixed machine paths -- go-cni's /etc/cni/net.d and
/opt/cni/bin, libcni's cache /var/lib/cni, podman's image blob cache
/var/lib/containers/cache, containerd's /run/containerd --
so the sandboxes of test_containerd.py and test_podman.py give each such path
a tmpfs of their own.  A path that does not exist on the machine is never
created there: its nearest existing ancestor is shadowed instead.

Usage (from a shell inside the sandbox): sandboxfs.py WORKDIR PATH...
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def tmpfs_over(path: str) -> None:
    """A tmpfs on PATH with PATH's own mode (tmpfs defaults to 1777)."""
    mode = os.stat(path).st_mode & 0o7777
    mount("-t", "tmpfs", "-o", f"mode={mode:o}", "nsnet-runtime", path)


_SHADOWED: set[str] = set()  # ancestors this process already shadowed


def private_dir(path: str, work: Path) -> None:
    """An empty PATH seen only in this mount namespace.  If PATH exists, a
    tmpfs covers it; otherwise its nearest existing ancestor is shadowed (a
    tmpfs that still shows the ancestor's entries through bind mounts of
    each), so nothing is ever created on the machine's disk."""
    if os.path.isdir(path):
        tmpfs_over(path)
        return
    ancestor = os.path.dirname(path)
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    if ancestor in _SHADOWED:  # already our tmpfs
        os.makedirs(path)
        return
    _SHADOWED.add(ancestor)
    orig = work / f"orig{ancestor.replace('/', '_')}"
    orig.mkdir()
    mount("--rbind", ancestor, str(orig))
    tmpfs_over(ancestor)
    for entry in sorted(os.listdir(orig)):
        src, dst = orig / entry, Path(ancestor) / entry
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            continue
        if src.is_dir():
            dst.mkdir()
        else:
            dst.touch()
        mount("--rbind", str(src), str(dst))
    os.makedirs(path)


if __name__ == "__main__":
    for target in sys.argv[2:]:
        private_dir(target, Path(sys.argv[1]))

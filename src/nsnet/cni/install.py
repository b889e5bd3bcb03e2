"""``nsnet cni install``: the launcher runtimes exec as the "nsnet" plugin.

VERSION is answered by the shell (a runtime asks around every ADD and DEL);
every other command runs the stdlib-only client with ``python -I -S``, which
hands it to the resident agent (see :mod:`nsnet.cni.agent`).  The client is
imported from its own directory rather than run as a script, so its cached
bytecode is used (a script is compiled on every run: ~8 ms of CPU a call).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import sys

from . import SUPPORTED
from . import client as _client

__all__ = ["install_cni_plugin"]

_LAUNCHER = """#!/bin/sh
# nsnet CNI plugin (written by 'nsnet cni install'). VERSION is answered here;
# other commands go to nsnet's resident CNI agent (see nsnet.cni.agent).
if [ "$CNI_COMMAND" = VERSION ]; then
  # shell builtins only: no process is started to answer
  buf=""
  while IFS= read -r line || [ -n "$line" ]; do buf="$buf$line"; done
  v=""
  case "$buf" in *'"cniVersion"'*)
    v=${{buf#*'"cniVersion"'}}; v=${{v#*'"'}}; v=${{v%%'"'*}} ;;
  esac
  case "$v" in {versions}) ;; *) v=1.1.0 ;; esac
  printf '{{"cniVersion": "%s", "supportedVersions": [{quoted}]}}\\n' "$v"
  exit 0
fi
exec {python} -I -S -c {code} "$@"
"""

# the client's directory is put first only for this import (the client itself
# imports nothing but the standard library), then taken off again
_CLIENT_CODE = ("import sys; sys.path.insert(0, {dir!r}); import client; del sys.path[0]; "
                "client.main()")


def install_cni_plugin(directory: str, python: str | None = None) -> str:
    """Write DIR/nsnet (atomically, mode 0755); returns its path."""
    code = _CLIENT_CODE.format(dir=os.path.dirname(os.path.abspath(_client.__file__)))
    text = _LAUNCHER.format(versions="|".join(SUPPORTED), python=python or sys.executable,
                            quoted=", ".join(f'"{v}"' for v in SUPPORTED),
                            code=shlex.quote(code))
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "nsnet")
    # a fresh name, created exclusively and never through a symlink: a root
    # install must not write where someone else's link points
    tmp = f"{target}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o755)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target

"""``nsnet cni install``: the launcher runtimes exec as the "nsnet" plugin.

VERSION is answered by the shell (a runtime asks around every ADD and DEL);
every other command runs the stdlib-only client with ``python -I -S``, which
hands it to the resident agent (see :mod:`nsnet.cni.agent`).
"""

from __future__ import annotations

import os
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
exec {python} -I -S {client} "$@"
"""


def install_cni_plugin(directory: str, python: str | None = None) -> str:
    """Write DIR/nsnet (atomically, mode 0755); returns its path."""
    text = _LAUNCHER.format(versions="|".join(SUPPORTED), python=python or sys.executable,
                            quoted=", ".join(f'"{v}"' for v in SUPPORTED),
                            client=os.path.abspath(_client.__file__))
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "nsnet")
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target

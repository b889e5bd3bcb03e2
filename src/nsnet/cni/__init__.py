"""The CNI plugin (spec 1.1, answering 0.3.0-1.1.0): ``nsnet-cni``.

A runtime execs the plugin with ``CNI_*`` variables and the network
configuration on stdin; the network it serves is an ordinary nsnet network
(named after the configuration), so ``nsnet network ls/inspect``, reconcile
and the firewall and DNS all apply.  VERSION answers before importing the
engine: runtimes call it around every ADD and DEL.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["SUPPORTED", "main"]

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def main() -> None:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        raw = sys.stdin.read() if not sys.stdin.isatty() else ""
        try:
            asked = json.loads(raw).get("cniVersion", "1.1.0") if raw.strip() else "1.1.0"
        except (ValueError, AttributeError):
            asked = "1.1.0"
        version = asked if asked in SUPPORTED else "1.1.0"
        print(json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED}))
        return
    from .plugin import run

    sys.exit(run(command))

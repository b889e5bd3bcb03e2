"""An "outside world" for sandboxed network tests.

A namespace at 198.51.100.2 (documentation range) joined to the sandbox host
(198.51.100.1, plus 198.51.100.3 for HOST_IP tests) by a veth; small servers
answer with the address they saw (see nettools.py).  Servers are stopped by
PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOOLS = str(Path(__file__).parent / "nettools.py")
HOST_IP, HOST_IP2, OUT_IP = "198.51.100.1", "198.51.100.3", "198.51.100.2"


class World:
    def __init__(self, sandbox) -> None:
        from nsnet.kernel import create_netns

        self.box = sandbox
        create_netns(sandbox.host_dir, "outside").close()
        self.out_path = os.path.join(sandbox.host_dir, "outside")
        self.servers: list[subprocess.Popen] = []
        up = sandbox.name("up")
        sandbox.host("ip", "link", "add", up, "type", "veth", "peer", "name", "eth0",
                     "netns", self.out_path)
        sandbox.host("ip", "addr", "add", f"{HOST_IP}/24", "dev", up)
        sandbox.host("ip", "addr", "add", f"{HOST_IP2}/24", "dev", up)
        sandbox.host("ip", "link", "set", up, "up")
        self.out("ip", "addr", "add", f"{OUT_IP}/24", "dev", "eth0")
        self.out("ip", "link", "set", "eth0", "up")
        self.out("ip", "link", "set", "lo", "up")
        self.serve(self.out_path, "tcp", 7000)
        self.serve(self.out_path, "udp", 7000)

    def out(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.out_path}", *argv],
                              capture_output=True, text=True, check=check)

    def serve(self, ns_path: str, proto: str, *ports: int) -> None:
        proc = subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, TOOLS, "serve",
                                 proto, *map(str, ports)], stdout=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout and proc.stdout.readline().strip() == "ready"

    def serve_in(self, netns: str, proto: str, *ports: int) -> None:
        self.serve(os.path.join(self.box.netns_dir, netns), proto, *ports)

    def ask(self, where: str, proto: str, ip: str, port: int, src_port: int = 0) -> str | None:
        """From a netns name, "host" or "outside": the answer, or None."""
        path = {"host": self.box.host_path, "outside": self.out_path}.get(
            where, os.path.join(self.box.netns_dir, where))
        argv = ["nsenter", f"--net={path}", sys.executable, TOOLS, "ask", proto, ip, str(port)]
        proc = subprocess.run(argv + ([str(src_port)] if src_port else []),
                              capture_output=True, text=True)
        return proc.stdout.strip() or None

    def ask_all(self, probes: list[tuple]) -> list[str | None]:
        """``ask`` for each (where, proto, ip, port) at once: a blocked probe
        costs its whole timeout, so a test of many blocked paths runs them
        side by side instead of one after the other."""
        with ThreadPoolExecutor(max_workers=len(probes) or 1) as pool:
            return list(pool.map(lambda p: self.ask(*p), probes))

    def ok(self, *args: str) -> str:
        proc = self.box.cli(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def ruleset(self) -> str:
        return self.box.host("nft", "list", "ruleset").stdout

    def close(self) -> None:
        for proc in self.servers:  # by PID, never by name
            proc.kill()
            proc.wait()

"""``--explain``: what a command asked the kernel, as commands a person could type.

The recording itself lives in the kernel layer (:mod:`nsnet.kernel.record`);
this module is what the CLI uses: start a recording before the engine opens
its host namespace, print it afterwards, and -- for ``--dry-run`` -- run the
command in a throwaway copy instead of the real thing.

Why a dry run prints true commands: it is not a simulation.  The state
store is copied (SQLite's backup API: a consistent snapshot) into a
temporary directory, a fresh namespace plays the host, and ``reconcile``
rebuilds there everything nsnet owns (its namespaces, bridges, endpoints,
firewall) from that copy -- the same code that repairs a real host.  The
command then runs for real in the copy, recorded; the copy is destroyed
afterwards (its namespaces by name, its DNS server by its pid file).  What
the copy cannot hold is what nsnet does not own: links, routes, listeners
and namespaces someone else made in the real host are absent, so a refusal
they would cause is not reproduced, and an existing foreign namespace is an
empty stand-in.  Names nsnet draws at random (network ids, ``br-ID``,
``vethID``, MACs) differ from those a later real run draws.

``nsnet lab --explain`` prints, beside each step of the article's lab
(shared/seed/LAB.md), the article's own commands, what nsnet does
differently and why, then nsnet's commands, then the state read back.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .kernel import record
from .kernel.record import Recorder

__all__ = ["LAB_ARTICLE", "ExplainSession", "explain_preamble", "lab_explain_printer"]


def explain_preamble(netns_dir: str, host_path: str, dry_run: bool, body: str = "") -> str:
    lines = ["# nsnet --explain: the commands below make the same kernel state "
             "as what nsnet sent" + (" (dry run: in a throwaway copy, nothing changed)"
                                     if dry_run else ""),
             "# commands without -n run in nsnet's host namespace" +
             (f" ({host_path}: nsenter --net={host_path})" if host_path else "")]
    if "nft -f -" in body or "nft -j -f -" in body:
        lines.append("# nft: each transaction nsnet applied (JSON, through libnftables) in nft's "
                     "own syntax, one atomic batch as `nft -f` applies a file")
    if netns_dir.rstrip("/") not in ("/run/netns", "/var/run/netns"):
        lines.append(f"# ip -n NAME means NAME in {netns_dir}: run them with that "
                     "directory mounted on /run/netns (unshare -m)")
    return "\n".join(lines) + "\n"


# Step headers: the recorder names a step by the function that sent it
# (nsnet.kernel.record); these read better.  Unknown names print as they are.
STEP_TITLES = {
    "create namespaces": "namespaces (bind-mounted, as ip netns add)",
    "create bridge": "the network's bridge: address, IPv6 off, up with its ownership alias",
    "guard loopback": "the bridge's tc loopback guard (drops 127.0.0.0/8 from containers)",
    "ensure forwarding": "IPv4 forwarding in the host namespace",
    "fw apply": "firewall: one atomic nft transaction",
    "fw connect": "firewall: one atomic nft transaction",
    "fw delete": "firewall: one atomic nft transaction",
    "sync firewall": "firewall: rebuilt from the state",
    "connect chunk": "veth pairs: peer created inside its namespace, host end on the bridge "
                     "and up; host ends marked with their ownership alias",
    "configure inside": "inside the namespace: IPv6 off, lo and the interface up, address, "
                        "default route",
    "delete links": "veth pairs deleted (their peers go with them)",
    "delete bridge": "the bridge deleted",
    "write resolv": "resolv.conf for the namespace (ip netns exec bind-mounts it)",
    "write resolv confs": "resolv.conf for the namespace (ip netns exec bind-mounts it)",
    "roll forward delete": "namespaces removed",
    "move default routes": "default route moved to another network",
    "forget udp": "stale UDP conntrack entries forgotten",
    "repair bridge": "the bridge repaired",
    "sync dns": "the embedded DNS server",
    "settle dns": "the embedded DNS server",
}


class ExplainSession:
    """One recording for one CLI command (optionally in a dry-run copy)."""

    def __init__(self, netns_dir: str, etc_netns_dir: str, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.real_netns_dir = os.path.abspath(netns_dir)
        self.real_etc_dir = etc_netns_dir
        self.recorder = Recorder(0, self.real_netns_dir, etc_netns_dir)
        self._recording = record.recording(self.recorder)
        self._copy: str | None = None
        self._drained = False
        self.host_path = ""

    # ------------------------------------------------------------- engine
    def engine(self, host_netns: str | None, state_dir: str, netns_dir: str,
               etc_netns_dir: str):  # -> Engine
        from .engine import Engine

        if self.dry_run:
            host_netns, state_dir, netns_dir, etc_netns_dir = self._make_copy(
                state_dir, netns_dir, etc_netns_dir)
            self.recorder.netns_dir = os.path.abspath(netns_dir)
            quiet = Engine.open(host_netns=host_netns, state_dir=state_dir,
                                netns_dir=netns_dir, etc_netns_dir=etc_netns_dir,
                                notify=lambda _m: None)
            try:
                quiet.reconcile()  # nsnet's objects, rebuilt in the copy (unrecorded)
            finally:
                quiet.close()
        self._recording.__enter__()
        engine = Engine.open(host_netns=host_netns, state_dir=state_dir, netns_dir=netns_dir,
                             etc_netns_dir=etc_netns_dir)
        self.recorder.host = os.fstat(engine.host.fd).st_ino
        if host_netns and not self.dry_run:
            self.host_path = engine.host.path
        return engine

    def _make_copy(self, state_dir: str, netns_dir: str,
                   etc_netns_dir: str) -> tuple[str, str, str, str]:
        from .kernel import create_netns, ensure_netns_dir

        self._copy = tempfile.mkdtemp(prefix="nsnet-explain-")
        paths = {d: os.path.join(self._copy, d) for d in ("state", "netns", "host", "etc")}
        for path in paths.values():
            os.makedirs(path, mode=0o755)
        src = os.path.join(state_dir, "state.db")
        if os.path.exists(src):
            with sqlite3.connect(src) as have, \
                    sqlite3.connect(os.path.join(paths["state"], "state.db")) as copy:
                have.backup(copy)
        ensure_netns_dir(paths["netns"])
        create_netns(paths["host"], "host").close()
        return os.path.join(paths["host"], "host"), paths["state"], paths["netns"], \
            paths["etc"]

    def close(self) -> None:
        self._recording.__exit__(None, None, None)
        if self._copy:
            self._destroy_copy(self._copy)
            self._copy = None

    @staticmethod
    def _destroy_copy(base: str) -> None:
        from .dns import stop_daemons
        from .kernel.netns import umount

        stop_daemons(os.path.join(base, "state"))
        for sub in ("netns", "host"):
            d = os.path.join(base, sub)
            for path in [os.path.join(d, n) for n in os.listdir(d)] + [d]:
                while True:  # stacked mounts: peel them all
                    try:
                        umount(path)
                    except OSError:
                        break
        shutil.rmtree(base, ignore_errors=True)

    # ------------------------------------------------------------- output
    def text(self) -> str:
        body = self._render()
        if self._copy:  # print the user's paths, not the copy's
            body = body.replace(os.path.join(self._copy, "etc"), self.real_etc_dir)
        pre = explain_preamble(self.real_netns_dir, self.host_path, self.dry_run, body)
        empty = "# (the rest was shown beside each step above)\n" if self._drained else \
            "# (nothing was sent to the kernel)\n"
        return pre + (body or empty)

    def _render(self) -> str:
        for entry in self.recorder.entries:
            entry.step = STEP_TITLES.get(entry.step, entry.step)
        return self.recorder.render()

    def drain(self) -> str:
        """What was recorded since the last drain (the lab prints per step)."""
        text = self._render()
        self.recorder.entries.clear()
        self._drained = True
        return text


# ------------------------------------------------------------------ lab
# The article's own commands (shared/seed/docker-netns-article.fr.txt) and
# what nsnet does differently, per step of `nsnet lab`.
LAB_ARTICLE: dict[int, tuple[list[str], str]] = {
    1: (["ip netns add ns1", "ip netns add ns2"],
        "the same: a namespace bind-mounted under the netns directory (nsnet makes it "
        "in-process: unshare and bind-mount, no ip process)"),
    2: (["brctl addbr mydocker0", "ip a add 172.16.1.254/16 dev mydocker0",
         "ip link set dev mydocker0 up"],
        "ip link instead of brctl; the bridge gets a fixed random MAC (stable while ports "
        "come and go), IPv6 off, a tc loopback guard (drops 127.0.0.0/8 entering from "
        "containers), and an alias 'nsnet:...' -- the ownership mark that lets cleanup "
        "touch only what nsnet made; plus its nftables table (one atomic transaction)"),
    3: (["ip link add veth1 type veth peer name veth1p", "brctl addif mydocker0 veth1",
         "ip link set veth1 up", "ip link set veth1p netns ns1",
         "ip netns exec ns1 ip link set veth1p name eth0",
         "ip netns exec ns1 ip link set eth0 up",
         "ip netns exec ns1 ip a add 172.16.1.1/16 dev eth0",
         "ip netns exec ns1 ip route add default via 172.16.1.254"],
        "the peer is created inside ns1 already named eth0, the host end already on the "
        "bridge, in one request (moving a device between namespaces costs ~17 ms); then the "
        "host end's IPv6 goes off and it is brought up with its ownership alias; inside, IPv6 is "
        "turned off on eth0 (an IPv4 network: no autoconfiguration traffic), then lo (which "
        "the article leaves down), eth0, the address and the route go in one batch (bulk "
        "requests: one netlink sendmsg, not one process per command)"),
}
LAB_ARTICLE[4] = ([c.replace("veth1", "veth2").replace("ns1", "ns2").replace(
    "172.16.1.1/", "172.16.1.2/") for c in LAB_ARTICLE[3][0]],
    LAB_ARTICLE[3][1].replace("ns1", "ns2"))


def lab_explain_printer(session: ExplainSession,
                        out: Callable[[str], None]) -> Callable[[str], None]:
    """Wrap the lab's printer: when the lab announces step N (it does so after
    the step's kernel work, to read the state back), print the article's
    commands, nsnet's difference, and what nsnet sent, then the state."""

    def printer(line: str) -> None:
        head = line.split(".", 1)[0]
        if head.isdigit() and int(head) in LAB_ARTICLE:
            article, why = LAB_ARTICLE[int(head)]
            out(line)
            out("   the article types:")
            for cmd in article:
                out(f"     {cmd}")
            for i, text in enumerate(textwrap.wrap(f"nsnet differs: {why}", 92)):
                out(("   " if i == 0 else "     ") + text)
            sent = session.drain()
            out("   nsnet sent (equivalent commands):")
            for cmd in (sent or "# (nothing: already there)\n").splitlines():
                out(f"     {cmd}")
            out("   state read back:")
            return
        out(line)

    return printer


@contextmanager
def explaining(netns_dir: str, etc_netns_dir: str, dry_run: bool = False
               ) -> Iterator[ExplainSession]:
    session = ExplainSession(netns_dir, etc_netns_dir, dry_run)
    try:
        yield session
    finally:
        session.close()

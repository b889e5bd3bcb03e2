"""nft verdicts on doctor's own probe, as the kernel reports them.

For each namespace on the path, a temporary table ``inet nsnetdoc<pid>`` (and
``bridge nsnetdoc<pid>`` where a bridge forwards) marks packets between the
two endpoints with ``meta nftrace set 1`` at the first priority of
prerouting and output; ``nft monitor trace`` in that namespace then prints
every rule and policy verdict of every table -- nsnet's and anyone else's --
the probe meets.  The tables are deleted when the block ends, even on error.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import kernel as k

TABLE = f"nsnetdoc{os.getpid()}"
START_WAIT = 0.3  # nft monitor subscribes asynchronously; no readiness signal
DRAIN_WAIT = 0.3
_LINE = re.compile(r"^trace id \S+ (\S+) (\S+) (\S+) (rule|policy) (.*?)\s*$")


@dataclass(frozen=True)
class Verdict:
    where: str  # namespace label ("host", a namespace name)
    family: str
    table: str
    chain: str
    rule: str  # the rule's text, or "" for the chain's policy
    verdict: str  # "drop", "reject", ...

    @property
    def is_drop(self) -> bool:
        return self.verdict in ("drop", "reject")


def _nft(ns: k.Netns, args: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    with k.entered(ns.fd):
        return subprocess.run(["nft", *args], input=text, capture_output=True, text=True,
                              check=False)


def _tables(pairs: list[tuple[str, str]], bridge: bool) -> str:
    """inet (and bridge) tables marking each (src, dst) pair, of either family."""
    marks = "".join(f"{_l3(s)} saddr {s} {_l3(d)} daddr {d} meta nftrace set 1\n"
                    for s, d in pairs if _l3(s) == _l3(d))
    chains = (f"chain pre {{ type filter hook prerouting priority -500; {marks} }}\n"
              f"chain out {{ type filter hook output priority -500; {marks} }}")
    text = f"table inet {TABLE} {{\n{chains}\n}}\n"
    if bridge:
        text += (f"table bridge {TABLE} {{\nchain pre {{ type filter hook prerouting "
                 f"priority -500; {marks} }}\n}}\n")
    return text


def _l3(ip: str) -> str:
    return "ip6" if ":" in ip else "ip"


def _parse(where: str, output: str) -> list[Verdict]:
    out = []
    for line in output.splitlines():
        m = _LINE.match(line)
        if not m or m.group(2) == TABLE:
            continue
        family, table, chain, kind, rest = m.groups()
        if kind == "policy":
            out.append(Verdict(where, family, table, chain, "", rest.split()[0]))
            continue
        v = re.search(r"\(verdict (\w+)", rest)
        if v and v.group(1) in ("drop", "reject", "accept"):
            out.append(Verdict(where, family, table, chain, rest[:rest.rfind("(verdict")].strip(),
                               v.group(1)))
    return out


@dataclass
class Trace:
    verdicts: list[Verdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # namespaces that could not be traced


@contextlib.contextmanager
def traced(places: list[tuple[str, k.Netns, bool]], pairs: list[tuple[str, str]]
           ) -> Iterator[Trace]:
    """Trace packets between ``pairs`` (src, dst) in each (label, netns,
    has_bridge) place while the block runs; the yielded Trace is filled with
    the verdicts seen when the block ends."""
    result = Trace()
    verdicts = result.verdicts
    monitors: list[tuple[str, subprocess.Popen]] = []
    added: list[tuple[k.Netns, list[str]]] = []
    signals = _Signals()
    try:
        for label, ns, bridge in places:
            # noted before it exists: an interruption while nft runs must
            # still delete it (deleting a table that is not there is harmless)
            added.append((ns, ["inet", "bridge"] if bridge else ["inet"]))
            try:
                made = _nft(ns, ["-f", "-"], _tables(pairs, bridge))
            except FileNotFoundError:
                result.errors.append(f"{label}: nft is not installed")
                continue
            if made.returncode != 0:
                result.errors.append(f"{label}: {made.stderr.strip().splitlines()[0]}")
                continue
            with k.entered(ns.fd):
                monitors.append((label, subprocess.Popen(
                    ["nft", "monitor", "trace"], stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, text=True,
                    preexec_fn=k.die_with_parent)))  # no threads here
        time.sleep(START_WAIT)
        yield result
        time.sleep(DRAIN_WAIT)
    finally:
        signals.defer()  # a SIGTERM now waits until the tables are gone
        try:
            for label, proc in monitors:  # by the Popen we started, never by name
                proc.terminate()
                out, _ = proc.communicate(timeout=5)
                verdicts.extend(_parse(label, out or ""))
            for ns, families in added:
                for family in families:
                    with contextlib.suppress(FileNotFoundError):
                        _nft(ns, ["delete", "table", family, TABLE])
        finally:
            signals.restore()


class _Signals:
    """While doctor's tables exist, SIGTERM unwinds (KeyboardInterrupt, so
    ``finally`` removes them) instead of killing on the spot; during the
    removal itself it is held back and delivered afterwards."""

    def __init__(self) -> None:
        self.previous: Any = None
        self.deferring = False
        self.pending = False
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: Any) -> None:
        if self.deferring:
            self.pending = True
            return
        raise KeyboardInterrupt

    def defer(self) -> None:
        self.deferring = True

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        if self.pending:
            raise KeyboardInterrupt


def rule_handle(ns: k.Netns, v: Verdict) -> int | None:
    """The handle of the rule a verdict names (to print a delete command)."""
    listing = _nft(ns, ["-a", "list", "chain", v.family, v.table, v.chain]).stdout

    def norm(text: str) -> str:
        return re.sub(r"counter packets \d+ bytes \d+", "counter", text).strip()

    for line in listing.splitlines():
        m = re.match(r"^\s*(.*?)\s*# handle (\d+)\s*$", line)
        if m and norm(m.group(1)) == norm(v.rule):
            return int(m.group(2))
    return None


def foreign_chains(ns: k.Netns, hook: str) -> list[str]:
    """``family table chain`` of every base chain on ``hook`` that is not
    nsnet's (nor doctor's own)."""
    import json

    try:
        out = _nft(ns, ["-j", "list", "chains"]).stdout
        items = json.loads(out or "{}").get("nftables", [])
    except (FileNotFoundError, ValueError):
        return []
    return [f"{c['family']} {c['table']} {c['name']}" for c in
            (i["chain"] for i in items if "chain" in i)
            if c.get("hook") == hook and c["table"] not in ("nsnet", TABLE)]

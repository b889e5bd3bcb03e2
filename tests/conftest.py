"""Shared fixtures.

Every test that touches the kernel runs nsnet with its "host" inside a
throwaway namespace (``sandbox``), with its own netns directory and state
directory, and unique names.  The fixture always removes what it made; a
session-end check fails the run if any namespace, mount or root-namespace
link appeared during the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI") == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/tests/kernel/" in path or "/tests/e2e/" in path:
            item.add_marker(pytest.mark.root)
        if "/tests/security/" in path:
            item.add_marker(pytest.mark.root)
            if item.get_closest_marker("attack") is None:
                raise pytest.UsageError(
                    f"{item.nodeid}: every test in tests/security needs @pytest.mark.attack")
    # The longest tests first (stable otherwise): with `--dist worksteal` the
    # other worker takes the rest, so the run does not end with one worker
    # alone on a 2.5-minute test while the other idles (it did: ~3 min).
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not ROOT:
        if IN_CI:
            pytest.fail("this test needs root, and under CI=true it must not be skipped")
        pytest.skip("needs root")


# ------------------------------------------------------------ leak check
def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _dns_servers() -> set[str]:
    """Running nsnet DNS servers (detection only: cleanup is by PID file)."""
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # Daemons of this checkout's Python only: a helper's worktree or a
        # benchmark run beside this session has its own venv (in CI, one session
        # runs, so every daemon there is ours).
        if argv[0] != sys.executable.encode():
            continue
        if b"nsnet.dns" in argv or b"nsnet.cni.agent" in argv:
            out.add(f"{pid} " + b" ".join(argv).decode(errors="replace").strip())
    return out


def stop_by_pidfile(path: str) -> None:
    from nsnet.dns import stop_daemon

    stop_daemon(path)


def _root_nft_tables() -> set[str]:
    try:
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return set()
    return set(out.splitlines())


def _run_netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _fingerprint() -> dict[str, set[str]]:
    if not ROOT:
        return {}
    return {"links in the root namespace": _root_links(), "mounts": _mounts(),
            "nft tables in the root namespace": _root_nft_tables(),
            "nsnet daemons (DNS, CNI agent)": _dns_servers(),
            "entries in /run/netns": _run_netns()}


def _xdist_worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker: `make test` runs two. The leak check and the
    attack catalogue belong to the controller, which starts before the workers
    and finishes after them; a worker would see its sibling's live objects."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _xdist_worker(session.config):
        return
    session.config._nsnet_before = _fingerprint()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _xdist_worker(session.config):
        return
    _write_attack_catalogue()
    before = getattr(session.config, "_nsnet_before", {})
    after = _fingerprint()
    if "mounts" in after:  # only ours: another test session may run beside this one
        base = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
        after["mounts"] = {m for m in after["mounts"] if m.startswith(base)}
        # (every new nsnet daemon counts, wherever its state is: one left in a
        # benchmark's sandbox would keep that sandbox alive)
    leaks = {k: sorted(after[k] - before.get(k, set())) for k in after}
    leaks = {k: v for k, v in leaks.items() if v}
    if leaks:
        sys.stderr.write(f"\nnsnet leak check FAILED: the tests left {leaks}\n")
        session.exitstatus = 1
    elif ROOT:
        sys.stderr.write("\nnsnet leak check: no namespace, mount or link left behind\n")


# --------------------------------------------------------------- sandbox
class Sandbox:
    """A throwaway host namespace, netns directory and state directory."""

    def __init__(self, base: Path) -> None:
        from nsnet.kernel import create_netns, ensure_netns_dir

        self.id = uuid.uuid4().hex[:6]
        self.base = base
        self.netns_dir = str(base / "netns")
        self.state_dir = str(base / "state")
        self.host_dir = str(base / "host")
        os.makedirs(self.netns_dir)
        os.makedirs(self.host_dir)
        ensure_netns_dir(self.netns_dir)  # as 'ip netns add' leaves it
        self.etc_dir = str(base / "etc-netns")
        self.host_path = os.path.join(self.host_dir, "host")
        create_netns(self.host_dir, "host").close()
        self.engines: list = []
        self.host("ip", "link", "set", "lo", "up")

    def name(self, prefix: str) -> str:
        """A unique, short name (fits in 15 bytes)."""
        return f"{prefix}{self.id}"[:15]

    def engine(self, **kw):
        from nsnet import Engine

        kw.setdefault("etc_netns_dir", self.etc_dir)
        eng = Engine.open(host_netns=self.host_path, state_dir=self.state_dir,
                          netns_dir=self.netns_dir, **kw)
        self.engines.append(eng)
        return eng

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(NSNET_STATE_DIR=self.state_dir, NSNET_NETNS_DIR=self.netns_dir,
                   NSNET_HOST_NETNS=self.host_path, NSNET_LOCK_TIMEOUT="30",
                   NSNET_ETC_NETNS_DIR=self.etc_dir)
        env.pop("NSNET_DEBUG", None)
        return env

    @staticmethod
    def cli_argv() -> list[str]:
        return [sys.executable, "-m", "nsnet.cli"]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cli_argv(), *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def host(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox host namespace."""
        return subprocess.run(["nsenter", f"--net={self.host_path}", *argv],
                              capture_output=True, text=True, check=check)

    def inside(self, netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={os.path.join(self.netns_dir, netns)}", *argv],
                              capture_output=True, text=True, check=check)

    def foreign_netns(self, name: str) -> str:
        """A namespace nsnet did not make (as 'ip netns add' would)."""
        from nsnet.kernel import create_netns

        create_netns(self.netns_dir, name).close()
        return name

    def fingerprint(self) -> tuple:
        """Everything a failed command must leave unchanged."""
        keys = ("ifindex", "ifname", "address", "mtu", "master", "ifalias", "group")
        links = [tuple(lk.get(key) for key in keys)  # operstate lags behind: left out
                 for lk in json.loads(self.host("ip", "-j", "link", "show").stdout)]
        addrs = self.host("ip", "-4", "-o", "addr", "show").stdout
        routes = self.host("ip", "route", "show").stdout.replace(" linkdown", "")
        # IPv6 as well (#16): global addresses and routes; link-local ones
        # come and go with carrier (a bridge gets one from its first port)
        addrs6 = self.host("ip", "-6", "-o", "addr", "show", "scope", "global").stdout
        routes6 = [line.replace(" linkdown", "")
                   for line in self.host("ip", "-6", "route", "show").stdout.splitlines()
                   if not line.startswith(("fe80::", "multicast"))]
        names = sorted(os.listdir(self.netns_dir))
        state = self.cli("network", "ls", "--json").stdout
        ns_state = self.cli("ns", "ls", "--json").stdout
        ruleset = self.host("nft", "list", "ruleset").stdout
        return (links, addrs, routes, addrs6, routes6, names, state, ns_state, ruleset)

    def stop_dns(self) -> None:
        """The DNS server and CNI agent a test left running, by the PIDs in
        their own pid files (never by name)."""
        from nsnet.dns import stop_daemons

        if os.path.isdir(self.state_dir):
            stop_daemons(self.state_dir)

    def close(self) -> None:
        from nsnet.kernel.netns import umount

        self.stop_dns()
        for eng in self.engines:
            eng.close()
        for d in (self.netns_dir, self.host_dir):
            for path in [os.path.join(d, n) for n in os.listdir(d)] + [d]:
                while True:  # stacked mounts are possible: peel them all
                    try:
                        umount(path)
                    except OSError:
                        break
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("sbx"))
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def world(sandbox: Sandbox) -> Iterator:
    """The sandbox plus an outside namespace at 198.51.100.2 (tests/world.py)."""
    from world import World

    w = World(sandbox)
    try:
        yield w
    finally:
        w.close()


# ------------------------------------------------ the adversarial suite
# tests/security: every isolation, safety or cleanup promise of the README
# tried as an attacker would (a LAN neighbour with raw frames, an endpoint of
# another or an internal network, an unprivileged user, a hostile working or
# state directory, a real runtime in its own mount namespace).  Each test
# carries @pytest.mark.attack(attack=..., promise=..., defect=...): what the
# attacker does, which promise it tries to break, and the reported defect it
# reproduces ("#12.2").  With NSNET_SECURITY_REPORT=PATH the session writes
# the catalogue -- attack, promise, result -- as Markdown (`make
# security-report` writes bench/results/security.md).  These hooks live here,
# not in tests/security/conftest.py: a second conftest module would shadow
# this one for tests that do `from conftest import ...`.
@dataclass
class Row:
    test: str
    attack: str
    promise: str
    defect: str
    outcome: str


_ROWS: list[Row] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "attack(attack, promise, defect=''): an adversarial test (tests/security)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    mark = item.get_closest_marker("attack")
    if mark is None or not (report.when == "call" or report.failed or report.skipped):
        return  # one row per test: its call, or the setup/teardown that failed or skipped
    result = "held" if report.passed else "SKIPPED" if report.skipped else "BROKEN"
    _ROWS.append(Row(item.nodeid.split("::", 1)[-1], mark.kwargs.get("attack", ""),
                     mark.kwargs.get("promise", ""), mark.kwargs.get("defect", ""), result))


def _write_attack_catalogue() -> None:
    path = os.environ.get("NSNET_SECURITY_REPORT")
    if not path or not _ROWS:
        return
    rows = {r.test: r for r in _ROWS}.values()  # a setup failure and a call row: keep the last
    held = sum(r.outcome == "held" for r in rows)
    lines = ["# Attack catalogue (generated by tests/security)", "",
             f"{len(rows)} attacks, {held} held, {len(rows) - held} not held. "
             "Regenerate with `make security-report`.", "",
             "| attack | promise | defect | result | test |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r.test):
        cells = [r.attack, r.promise, r.defect, r.outcome, f"`{r.test}`"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")

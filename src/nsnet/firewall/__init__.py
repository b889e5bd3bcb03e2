"""The firewall layer: a tiny driver interface, the nftables driver, a fake.

The engine builds transactions with the pure functions of
:mod:`nsnet.firewall.rules` and hands each to a :class:`FirewallDriver`
whole: ``apply`` is one atomic transaction.  ``facts`` summarises what the
nsnet tables hold now -- tables, chains, and the owner comment of every rule
and element -- which is what reconcile compares against the same summary of
the transaction that would rebuild everything from the state store.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

__all__ = ["Facts", "FakeFirewall", "FirewallDriver", "facts_of_commands", "facts_of_listing"]

Facts = Counter  # of ("table", fam) / ("chain", fam, name) / ("rule", fam, chain, comment)
#                     / ("set", fam, name) / ("elem", fam, set, comment)


class FirewallDriver(Protocol):
    def apply(self, commands: list[dict[str, Any]]) -> None:
        """Apply all commands as one atomic transaction, or raise."""

    def facts(self) -> Facts:
        """What nsnet's tables hold now."""


def _comment(elem: Any) -> str | None:
    if isinstance(elem, list):  # map element: [key, data]
        elem = elem[0]
    return elem["elem"].get("comment") if isinstance(elem, dict) and "elem" in elem else None


def facts_of_listing(listing: list[dict[str, Any]]) -> Facts:
    """Facts from ``nft -j list table`` output."""
    facts: Facts = Counter()
    for obj in listing:
        if "table" in obj:
            facts[("table", obj["table"]["family"])] += 1
        elif "chain" in obj:
            facts[("chain", obj["chain"]["family"], obj["chain"]["name"])] += 1
        elif "rule" in obj:
            r = obj["rule"]
            facts[("rule", r["family"], r["chain"], r.get("comment"))] += 1
        for kind in ("set", "map"):
            if kind in obj:
                s = obj[kind]
                facts[("set", s["family"], s["name"])] += 1
                for elem in s.get("elem", []):
                    facts[("elem", s["family"], s["name"], _comment(elem))] += 1
    return facts


class _Sim:
    """Replays add/flush/delete commands into facts (the fake's kernel)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}

    def table(self, fam: str) -> dict[str, Any]:
        return self.tables.setdefault(fam, {"chains": {}, "sets": {}})

    def run(self, cmd: dict[str, Any]) -> None:
        (op, body), = cmd.items()
        (kind, obj), = body.items()
        fam = obj.get("family", "ip")
        if kind == "table":
            if op == "delete":
                if fam not in self.tables:
                    raise ValueError(f"no table {fam}")
                del self.tables[fam]
            else:
                self.table(fam)
            return
        t = self.tables.get(fam)
        if t is None:
            raise ValueError(f"no table {fam} for {op} {kind}")
        getattr(self, f"_{kind}")(op, t, obj)

    def _chain(self, op: str, t: dict[str, Any], obj: dict[str, Any]) -> None:
        chains = t["chains"]
        if op == "add":
            chains.setdefault(obj["name"], [])
        elif op == "flush":
            chains[obj["name"]] = []
        elif op == "delete" and chains.pop(obj["name"]):  # KeyError if missing, like nft
            raise ValueError("deleting a non-empty chain")

    def _rule(self, op: str, t: dict[str, Any], obj: dict[str, Any]) -> None:
        t["chains"][obj["chain"]].append(obj.get("comment"))

    def _set(self, op: str, t: dict[str, Any], obj: dict[str, Any]) -> None:
        t["sets"].setdefault(obj["name"], {})

    _map = _set

    def _element(self, op: str, t: dict[str, Any], obj: dict[str, Any]) -> None:
        elems = t["sets"][obj["name"]]
        for e in obj["elem"]:
            key = repr(e[0] if isinstance(e, list) else e)
            if op == "add":
                elems[key] = _comment(e)
            elif key in elems:
                del elems[key]
            else:
                raise ValueError(f"no element {key}")

    def facts(self) -> Facts:
        facts: Facts = Counter()
        for fam, t in self.tables.items():
            facts[("table", fam)] += 1
            for name, rules in t["chains"].items():
                facts[("chain", fam, name)] += 1
                facts.update(("rule", fam, name, c) for c in rules)
            for name, elems in t["sets"].items():
                facts[("set", fam, name)] += 1
                facts.update(("elem", fam, name, c) for c in elems.values())
        return facts


def facts_of_commands(commands: list[dict[str, Any]]) -> Facts:
    sim = _Sim()
    for cmd in commands:
        sim.run(cmd)
    return sim.facts()


class FakeFirewall:
    """Records transactions (for golden tests) and simulates their effect;
    a transaction with an impossible command fails whole, like nft's."""

    def __init__(self) -> None:
        self.transactions: list[list[dict[str, Any]]] = []
        self._sim = _Sim()

    def apply(self, commands: list[dict[str, Any]]) -> None:
        import copy

        trial = copy.deepcopy(self._sim)
        for cmd in commands:
            try:
                trial.run(cmd)
            except (ValueError, KeyError) as exc:
                from ..errors import KernelError

                raise KernelError(f"fake nftables rejected the transaction: {exc}") from None
        self._sim = trial
        self.transactions.append(commands)

    def facts(self) -> Facts:
        return self._sim.facts()

    def flush(self) -> None:
        """Like ``nft flush ruleset`` (as far as nsnet's tables go)."""
        self._sim = _Sim()

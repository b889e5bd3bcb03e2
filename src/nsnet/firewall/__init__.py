"""The firewall layer: a tiny driver interface, the nftables driver, a fake.

The engine builds transactions with the pure functions of
:mod:`nsnet.firewall.rules` and hands each to a :class:`FirewallDriver`
whole: ``apply`` is one atomic transaction.  ``facts`` summarises what the
nsnet tables hold now -- tables, chains, and the owner comment of every rule
and element -- a cheap count by owner.

``drift`` is what reconcile uses: it compares *content*, not counts.  A rule
whose verdict or match was edited, or a map element whose value changed, has
the same count as the right one.  The nftables driver therefore lets the
kernel speak for both sides: it applies the transaction that would rebuild
everything from the state store inside a throwaway network namespace
(unnamed, held by an fd only: nothing is left behind), lists that and the
live tables with nft's JSON, and compares the two listings with
:func:`content_of_listing` (handles dropped, set elements and objects
unordered, rule order within a chain kept).  Both listings go through the
same parser and printer, so a correct ruleset never differs from its own
rebuild however it was reached.  The fake compares its simulated content.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Protocol

__all__ = ["Facts", "FakeFirewall", "FirewallDriver", "content_of_listing", "describe_drift",
           "facts_of_commands", "facts_of_listing"]

Facts = Counter  # of ("table", fam) / ("chain", fam, name) / ("rule", fam, chain, comment)
#                     / ("set", fam, name) / ("elem", fam, set, comment)


class FirewallDriver(Protocol):
    def apply(self, commands: list[dict[str, Any]]) -> None:
        """Apply all commands as one atomic transaction, or raise."""

    def facts(self) -> Facts:
        """What nsnet's tables hold now."""

    def drift(self, commands: list[dict[str, Any]]) -> list[str]:
        """What differs between nsnet's tables now and what ``commands``
        (a full rebuild) would make them: one line per object, [] if equal."""


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


_HANDLES = ("handle",)


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    """Sort key of a canonical object: rules by their chain only (so a
    stable sort keeps their order), everything else by its whole content."""
    (kind, body), = obj.items()
    if kind == "rule":
        return ("rule", json.dumps([body["family"], body["chain"]]))
    return (kind, json.dumps(body, sort_keys=True))


def content_of_listing(listing: list[dict[str, Any]]) -> list[str]:
    """The content of ``nft -j list table`` output, canonical: no handles,
    set elements sorted, objects sorted except the rules of one chain, which
    keep their order (it decides which verdict wins)."""
    objs = []
    for obj in listing:
        if "metainfo" in obj or len(obj) != 1:
            continue
        (kind, body), = obj.items()
        body = {k: v for k, v in body.items() if k not in _HANDLES}
        if "elem" in body:
            body["elem"] = sorted(body["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        objs.append({kind: body})
    objs.sort(key=_object_key)
    return [json.dumps(o, sort_keys=True) for o in objs]


def describe_drift(have: list[str], want: list[str]) -> list[str]:
    """One line per object that is not as wanted ('unexpected ...' / 'missing
    ...'); a rule out of order shows as both.  Multisets, then order."""
    extra, missing = Counter(have) - Counter(want), Counter(want) - Counter(have)
    out = [f"unexpected {line}" for line in extra.elements()]
    out += [f"missing {line}" for line in missing.elements()]
    if not out and have != want:  # same objects, rules in another order
        out = [f"out of order {h}" for h, w in zip(have, want, strict=True) if h != w]
    return out


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
        t["chains"][obj["chain"]].append((obj.get("comment"),
                                          json.dumps(obj.get("expr"), sort_keys=True)))

    def _set(self, op: str, t: dict[str, Any], obj: dict[str, Any]) -> None:
        t["sets"].setdefault(obj["name"], {})

    _map = _set

    def _element(self, op: str, t: dict[str, Any], obj: dict[str, Any]) -> None:
        elems = t["sets"][obj["name"]]
        for e in obj["elem"]:
            key = repr(e[0] if isinstance(e, list) else e)
            if op == "add":
                data = json.dumps(e[1], sort_keys=True) if isinstance(e, list) else None
                elems[key] = (_comment(e), data)
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
                facts.update(("rule", fam, name, c) for c, _ in rules)
            for name, elems in t["sets"].items():
                facts[("set", fam, name)] += 1
                facts.update(("elem", fam, name, c) for c, _ in elems.values())
        return facts

    def content(self) -> list[str]:
        """Everything the fake holds, canonical (rule order kept per chain)."""
        out = []
        for fam, t in sorted(self.tables.items()):
            out.append(json.dumps(["table", fam]))
            for name, rules in sorted(t["chains"].items()):
                out.append(json.dumps(["chain", fam, name]))
                out += [json.dumps(["rule", fam, name, *r]) for r in rules]
            for name, elems in sorted(t["sets"].items()):
                out.append(json.dumps(["set", fam, name, sorted(elems.items())]))
        return out


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

    def drift(self, commands: list[dict[str, Any]]) -> list[str]:
        want = _Sim()
        for cmd in commands:
            want.run(cmd)
        return describe_drift(self._sim.content(), want.content())

    def flush(self) -> None:
        """Like ``nft flush ruleset`` (as far as nsnet's tables go)."""
        self._sim = _Sim()

"""Counting seams for "cost must not depend on what else exists": which SQL
an operation ran and how SQLite executes it, how many netlink dumps it made,
whether it read the mount table.  Tests assert on these counts, not on wall
time (robust on a loaded machine)."""

from __future__ import annotations

import builtins
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

# tables that grow with the number of endpoints / namespaces / ports / files
BIG = ("endpoints", "namespaces", "ports", "resolv_files", "cni_attachments")
_ALIASES = {"e": "endpoints", "p": "ports"}


@contextmanager
def traced_sql(db: sqlite3.Connection) -> Iterator[list[str]]:
    """Every statement ``db`` runs in the block, with its parameters bound."""
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        db.set_trace_callback(None)


def full_scans(db: sqlite3.Connection, statements: list[str]) -> list[str]:
    """The statements whose query plan reads a whole growing table (a plain
    SCAN, with or without a covering index: both read every row)."""
    bad = []
    for sql in statements:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head not in ("SELECT", "DELETE", "UPDATE"):
            continue
        for row in db.execute("EXPLAIN QUERY PLAN " + sql):
            m = re.match(r"SCAN (\w+)", row[3])
            if m and _ALIASES.get(m.group(1), m.group(1)) in BIG:
                bad.append(f"{sql.strip()}  --  {row[3]}")
    return bad


@contextmanager
def mountinfo_reads() -> Iterator[list[str]]:
    """Paths of /proc/*/mountinfo (or mounts) opened in the block."""
    seen: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def note(path: object) -> None:
        text = os.fsdecode(path) if isinstance(path, (str, bytes)) else ""
        if text.endswith(("mountinfo", "/mounts")):
            seen.append(text)

    def fake_open(file, *a, **kw):  # type: ignore[no-untyped-def]
        note(file)
        return real_open(file, *a, **kw)

    def fake_os_open(path, *a, **kw):  # type: ignore[no-untyped-def]
        note(path)
        return real_os_open(path, *a, **kw)

    builtins.open, os.open = fake_open, fake_os_open
    try:
        yield seen
    finally:
        builtins.open, os.open = real_open, real_os_open

"""The plain table printer prints exactly what rich prints (it exists because
rich takes about a millisecond per row: seconds for `ns ls` of thousands)."""

import io
import random

import pytest
from rich import box
from rich.console import Console
from rich.table import Table

from nsnet.cli.main import _plain_table


def _rich(columns, rows, width=200):
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=width).print(table)
    return out.getvalue().rstrip("\n")


@pytest.mark.parametrize("seed", range(30))
def test_plain_table_is_what_rich_prints(seed):
    rnd = random.Random(seed)
    alphabet = "abcxyz019-._,/ "
    columns = [rnd.choice(["NAME", "OWNER", "NETWORKS", "A", "LONG HEADER"])
               for _ in range(rnd.randint(1, 5))]
    rows = [["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
             for _ in columns] for _ in range(rnd.randint(0, 6))]
    assert _plain_table(columns, rows, 200) == _rich(columns, rows)


def test_what_rich_would_interpret_or_fold_is_left_to_rich():
    assert _plain_table(["A"], [["[bold]x"]], 200) is None
    assert _plain_table(["A"], [[":smile:"]], 200) is None
    assert _plain_table(["A", "B"], [["x" * 150, "y" * 60]], 200) is None

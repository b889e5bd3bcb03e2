"""bench.scale's report: the 5th/1st verdict is the median of the
sequences' ratios, not one sample, and the CPU accounting is shown."""

from __future__ import annotations

from bench import scale


def _growth(first: float, last: float) -> dict:
    cpu = {"user": 1.0, "sys": 2.0, "dns": 0.01, "kthreads": {"kworker": 0.3},
           "others": {}, "busy": 3.5, "idle": 4.0, "netns_alive": 60}
    return {"ok": True, "networks": 2, "size": 10, "start": 0.2, "connect": [first, last],
            "cpu": [cpu, cpu], "connect_one_small": 0.3, "connect_one_big": 0.3,
            "queries_small": dict.fromkeys(("ns ls", "network ls", "network inspect",
                                            "port ls", "reconcile --dry-run"), 0.3),
            "queries_big": dict.fromkeys(("ns ls", "network ls", "network inspect",
                                          "port ls", "reconcile --dry-run"), 0.3),
            "network_rm": 1.0}


def _floors(first: float, last: float) -> dict:
    return {v: {"ok": True, "times": [first, last]} for v in ("requests", "ip-batch")}


def test_the_verdict_is_the_median_of_the_sequences() -> None:
    seqs = [{"growth": _growth(4.0, 6.0), "floors": _floors(3.0, 3.3)},  # 1.5x
            {"growth": _growth(4.0, 4.4), "floors": _floors(3.0, 3.0)},  # 1.1x
            {"growth": _growth(4.0, 4.6), "floors": _floors(3.0, 3.6)}]  # 1.15x
    res = {"load_before": "0.1 0.1 0.1", "load_mid": "", "load_after": "", "reps": 3,
           "sequences": seqs, "growth": seqs[0]["growth"], "floors": seqs[0]["floors"],
           "topology": [], "settled": [{"waited": 1.0, "quiet": True, "base": 50}]}
    text = scale.report(res, "python -m bench.scale")
    assert "5th network / 1st: **1.15x** (target <= 1.2x: PASS)" in text
    assert "| median | | | | **1.15x** | 1.10x | 1.10x |" in text
    assert "| net1 | 4.00 | 1.00 | 2.00 | 0.01 | 0.30 (kworker 0.30) |" in text


def test_a_single_run_without_sequences_still_reports() -> None:
    g = _growth(4.0, 6.0)
    res = {"load_before": "", "load_mid": "", "load_after": "", "reps": 1, "growth": g,
           "floors": _floors(3.0, 3.0), "topology": []}
    assert "5th network / 1st: **1.50x** (target <= 1.2x: MISS)." in scale.report(res, "x")

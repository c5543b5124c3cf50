"""Percentiles and summaries of latency samples, and a plain-text table.

Samples are seconds; summaries print milliseconds. Percentiles use linear
interpolation between the closest ranks (the same definition as numpy's default),
so p50 of an even count is the mean of the two middle samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0..100) of ``samples``; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    frac = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * frac


@dataclass(frozen=True)
class Summary:
    """Order statistics of one series of samples (seconds)."""

    count: int
    minimum: float
    p50: float
    p90: float
    p99: float
    maximum: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            count=len(samples),
            minimum=min(samples),
            p50=percentile(samples, 50),
            p90=percentile(samples, 90),
            p99=percentile(samples, 99),
            maximum=max(samples),
            mean=sum(samples) / len(samples),
        )


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision; '-' for NaN."""
    if math.isnan(seconds):
        return "-"
    ms = seconds * 1000.0
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def fmt_ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return "-"
    return f"{numerator / denominator:.2f}x"


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False, left: int = 1
) -> str:
    """Columns padded to their widest cell, the first ``left`` flush left and the rest
    flush right; with ``markdown`` a GitHub table."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[i]) if i < left else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded)

    out = [line(header)]
    if markdown:
        rule = [("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)]
        out.append("|" + "|".join(rule) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in rows)
    return "\n".join(out)


async def in_turns(cycles: Mapping[str, Callable[[], Awaitable[T]]], iterations: int) -> dict[str, list[T]]:
    """Each of ``cycles`` run once as a warm-up (not kept), then ``iterations`` times in
    turns whose order rotates (no cycle always first); what each returned, by name."""
    for cycle in cycles.values():
        await cycle()
    names = list(cycles)
    results: dict[str, list[T]] = {name: [] for name in names}
    for i in range(iterations):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            results[name].append(await cycles[name]())
    return results


def parts_summary(
    samples: Sequence[Mapping[str, float]], parts: Sequence[str]
) -> dict[str, dict[str, float]]:
    """p50 and p95 in ms of each of ``parts`` of ``samples`` (each a mapping of part to seconds)."""
    return {
        part: {
            "p50_ms": round(percentile([s[part] for s in samples], 50) * 1000, 1),
            "p95_ms": round(percentile([s[part] for s in samples], 95) * 1000, 1),
        }
        for part in parts
    }


def latency_summary(samples: Sequence[float], digits: int = 1) -> dict[str, float]:
    """The count, p50 and p95 in ms of ``samples`` (seconds)."""
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50) * 1000, digits),
        "p95_ms": round(percentile(samples, 95) * 1000, digits),
    }


def emit(report: Mapping[str, Any], path: Path | None) -> None:
    """A run's report as JSON on stdout, and into ``path`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")

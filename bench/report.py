"""The markdown report of a peer run: per-scenario tables, a summary with ratios, and the targets.

"ours" in the summary is our best configuration for that metric; ratios are ours/raw RQ (raw's
best configuration) and ours/best peer (the best of Celery, Dramatiq and Huey).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Stat = tuple[float, float, float] | None
Table = dict[tuple[str, str], dict[str, Stat]]
PEERS = ("Celery", "Dramatiq", "Huey")
FAMILIES = ("ours", "raw RQ", *PEERS)


@dataclass(frozen=True)
class Metric:
    """One summary row: where it comes from and which way is better."""

    title: str
    scenario: str
    key: str
    higher_is_better: bool
    only: Callable[[str], bool] = lambda label: True


def family(label: str) -> str:
    return next(f for f in FAMILIES if label.startswith(f))


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"


def cell(stat: Stat) -> str:
    if stat is None:
        return "n/a"
    med, lo, hi = stat
    return fmt(med) if fmt(lo) == fmt(hi) else f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"


def best(table: Table, metric: Metric, fam: str) -> tuple[float, str] | None:
    """The best median of a family for a metric, with the configuration that gave it."""
    found = [(stat[0], label) for (scenario, label), stats in table.items()
             if scenario == metric.scenario and family(label) == fam and metric.only(label)
             and (stat := stats.get(metric.key)) is not None]
    if not found:
        return None
    return max(found) if metric.higher_is_better else min(found)


def scenario_tables(table: Table, errors: dict[tuple[str, str], str]) -> list[str]:
    """One table per scenario: every configuration, every metric, median (min–max)."""
    lines: list[str] = []
    for scenario in dict.fromkeys(s for s, _ in [*table, *errors]):
        labels = list(dict.fromkeys(label for s, label in [*table, *errors] if s == scenario))
        keys = list(dict.fromkeys(k for (s, _), stats in table.items() if s == scenario for k in stats))
        lines += [f"#### {scenario}", "", "| system (config) | " + " | ".join(keys) + " |",
                  "| --- |" + " --- |" * len(keys)]
        for label in labels:
            if (scenario, label) in table:
                stats = table[(scenario, label)]
                lines.append(f"| {label} | " + " | ".join(cell(stats.get(k)) for k in keys) + " |")
            else:
                lines.append(f"| {label} | failed: {errors[(scenario, label)]} |" + " |" * (len(keys) - 1))
        lines.append("")
    return lines


def ratio(ours: tuple[float, str] | None, other: float | None) -> float | None:
    return ours[0] / other if ours and other else None


def summary(table: Table, metrics: list[Metric]) -> list[str]:
    """Ours (best config) against raw RQ and each peer, with ours/raw and ours/best-peer."""
    lines = ["| metric | ours (best config) | raw RQ | Celery | Dramatiq | Huey | ours/raw | ours/best peer |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in metrics:
        per = {f: best(table, m, f) for f in FAMILIES}
        peer_values = [v[0] for f in PEERS if (v := per[f])]
        best_peer = (max if m.higher_is_better else min)(peer_values) if peer_values else None
        ours = per["ours"]
        ours_cell = f"{fmt(ours[0])} ({ours[1].removeprefix('ours ')})" if ours else "n/a"
        others = " | ".join(fmt(per[f][0]) if per[f] else "n/a" for f in ("raw RQ", *PEERS))
        lines.append(f"| {m.title} | {ours_cell} | {others} | {fmt(ratio(ours, per['raw RQ'] and per['raw RQ'][0]))} "
                     f"| {fmt(ratio(ours, best_peer))} |")
    return lines


def render(table: Table, errors: dict[tuple[str, str], str], metrics: list[Metric],
           targets: list[tuple[str, str, bool | None]], header: list[str]) -> str:
    """The whole report as markdown."""
    lines = [*header, "", "### Summary (median of the rounds)", "", *summary(table, metrics), "",
             "### Targets (issue 10, section 7)", "", "| target | measured | met? |", "| --- | --- | --- |"]
    for title, measured, met in targets:
        lines.append(f"| {title} | {measured} | {'n/a' if met is None else 'yes' if met else '**no**'} |")
    lines += ["", "### Every configuration (median, min–max over the rounds)", "", *scenario_tables(table, errors)]
    return "\n".join(lines)

"""docs/first-run.md: its smoke-run minutes and dollars are what `ernie compare docs/first-run.toml --plan`
prints on an empty results index (prices from catalog/prices.csv, minutes from the planner's stated defaults),
so a price or a default that moves makes this fail until the page is updated; README links the page."""

from __future__ import annotations

from pathlib import Path

from ernie.compare.estimate import BUCKETS, Estimate, History, estimate_plan
from ernie.compare.plan import load_plan

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "first-run.md"
PLAN = REPO / "docs" / "first-run.toml"


def row(e: Estimate) -> str:
    """The page's table row for one cell, its figures rounded as `ernie compare --plan` prints them."""
    hw = e.hardware
    unit = "chip" if hw.cloud == "gcp" else "GPU"
    minutes = " + ".join(f"{e.minutes[b].value:.1f}" for b in BUCKETS)
    return (f"| {e.cell} | {hw.accelerator}: {hw.chips} {unit}{'s' * (hw.chips != 1)}, {hw.hosts} "
            f"host{'s' * (hw.hosts != 1)} | {hw.usd_per_hour:.2f} | {minutes} = {e.total_minutes:.1f} | "
            f"{e.usd:.2f} | {hw.ttl_minutes} | {e.worst_usd:.2f} |")


def test_the_smoke_run_figures_are_the_planners(tmp_path: Path) -> None:
    planned = estimate_plan(load_plan(PLAN), History.of(tmp_path))
    assert not planned.refused, planned.refused
    assert [e.cell for e in planned.estimates] == ["v4-8", "v5e-4", "g5"]
    text = DOC.read_text()
    missing = [row(e) for e in planned.estimates if row(e) not in text]
    assert not missing, "docs/first-run.md should hold these rows:\n" + "\n".join(missing)


def test_readme_links_the_first_run_page() -> None:
    assert "(docs/first-run.md)" in (REPO / "README.md").read_text()

"""`doctor` over real device logs from public issue threads (tests/data/real-logs/README.md).

Each log is kept as the thread printed it, with the thread's address and what the thread concluded
(index.json). A failure's first finding must name that conclusion, as its code or as its first-ranked
cause; a healthy boot must give no finding at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_provisioning import doctor

REAL = Path(__file__).parent / "data" / "real-logs"
INDEX = json.loads((REAL / "index.json").read_text())


# A thread that ended without a cause (no answer, closed for lack of logs) is kept but not scored.
NO_CONCLUSION = "no-conclusion"
SCORED = [e for e in INDEX if e["expect"] not in ("nothing", NO_CONCLUSION)]
HEALTHY = [e for e in INDEX if e["expect"] == "nothing"]
UNCONCLUDED = [e for e in INDEX if e["expect"] == NO_CONCLUSION]
# The bar: the first finding names the thread's conclusion on at least 90 % of the scored logs.
REQUIRED_HIT_RATE = 0.90


def named_first(entry: dict[str, str]) -> bool:
    findings = doctor.scan_file(REAL / entry["file"]).findings
    if entry["expect"] == "nothing":
        return not findings
    if not findings:
        return False
    first = findings[0]
    return entry["expect"] in (first.code, first.causes[0].key if first.causes else None)


# A log whose thread concluded something the log itself does not show is kept, counted as a miss, and
# says why ("known_miss"); strict, so a miss that starts passing is noticed.
CASES = [
    pytest.param(e, marks=pytest.mark.xfail(reason=e["known_miss"], strict=True)) if "known_miss" in e else e
    for e in SCORED + HEALTHY
]


@pytest.mark.parametrize("entry", CASES, ids=[e["file"] for e in SCORED + HEALTHY])
def test_the_first_finding_names_the_threads_conclusion(entry: dict[str, str]) -> None:
    assert entry["url"].startswith("https://") and entry["conclusion"]
    assert named_first(entry), entry["conclusion"]


def figures() -> tuple[int, int, int, int, int]:
    hits = sum(named_first(e) for e in SCORED)
    false_alarms = sum(not named_first(e) for e in HEALTHY)
    return hits, len(SCORED), false_alarms, len(HEALTHY), len(UNCONCLUDED)


def test_hit_rate_and_false_alarms() -> None:
    hits, scored, false_alarms, healthy, _ = figures()
    assert hits >= REQUIRED_HIT_RATE * scored, f"{hits} of {scored} named first"
    assert false_alarms == 0


def test_the_docs_report_todays_figures() -> None:
    """docs/device-side.md states the figures this folder gives today."""
    hits, scored, false_alarms, healthy, unconcluded = figures()
    docs = " ".join((Path(__file__).parents[1] / "docs" / "device-side.md").read_text().split())
    expected = (
        f"{len(INDEX)} real logs: {scored} failures whose thread concluded a cause, {healthy} healthy runs and "
        f"{unconcluded} failures whose thread concluded nothing. The first finding names the thread's conclusion "
        f"on {hits} of {scored} ({100 * hits // scored} %); {false_alarms} false alarms on the {healthy} healthy runs"
    )
    assert expected in docs


def test_unconcluded_threads_are_kept_apart_and_still_read() -> None:
    for entry in UNCONCLUDED:
        assert entry["conclusion"].startswith("none"), entry["file"]
        assert doctor.scan_file(REAL / entry["file"]).findings, entry["file"]


def test_every_log_in_the_folder_is_indexed() -> None:
    assert sorted(p.name for p in REAL.glob("*.log")) == sorted(e["file"] for e in INDEX)
    assert len({e["file"] for e in INDEX}) == len(INDEX)

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
    for e in INDEX
]


@pytest.mark.parametrize("entry", CASES, ids=[e["file"] for e in INDEX])
def test_the_first_finding_names_the_threads_conclusion(entry: dict[str, str]) -> None:
    assert entry["url"].startswith("https://github.com/") and entry["conclusion"]
    assert named_first(entry), entry["conclusion"]


def test_hit_rate_and_false_alarms() -> None:
    """The figures docs/device-side.md reports."""
    failures = [e for e in INDEX if e["expect"] != "nothing"]
    healthy = [e for e in INDEX if e["expect"] == "nothing"]
    hits = sum(named_first(e) for e in failures)
    false_alarms = sum(not named_first(e) for e in healthy)
    assert (hits, len(failures), false_alarms, len(healthy)) == (6, 7, 0, 4)


def test_every_log_in_the_folder_is_indexed() -> None:
    assert sorted(p.name for p in REAL.glob("*.log")) == sorted(e["file"] for e in INDEX)

"""The schedule of the suite names files that exist (a renamed file would silently lose its place)."""

from __future__ import annotations

from pathlib import Path

from tests.tiers import LONGEST_FIRST, schedule_rank


def test_every_file_scheduled_first_is_a_test_file_of_the_suite() -> None:
    here = Path(__file__).parent
    assert [name for name in LONGEST_FIRST if not (here / name).is_file()] == []
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)


def test_the_longest_files_go_first_and_the_others_by_their_number_of_tests() -> None:
    ranked = sorted(["test_z.py", "test_a.py", LONGEST_FIRST[1], LONGEST_FIRST[0]],
                    key=lambda name: schedule_rank(name, {"test_z.py": 40, "test_a.py": 3}.get(name, 1)))  # fmt: skip
    assert ranked == [LONGEST_FIRST[0], LONGEST_FIRST[1], "test_z.py", "test_a.py"]

"""Factory batch inputs: a bad devices CSV, a bad batch configuration or a damaged journal is one line naming
its place, and nothing is written."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_provisioning.cli import main
from device_provisioning.errors import InputFileError
from device_provisioning.factory import devices_csv, inputs
from tests.batch_helpers import (
    write_config,
)

# The code-verification certificate a batch builds into its images (fixture signer).
pytest_plugins = ("tests.batch_fixtures",)


# --- inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("serial,name\nA,b\n", "line 1: missing column(s) thing_name"),
        ("serial,thing_name\nA,t1\nB\n", "line 3: 1 fields"),
        ("serial,thing_name\nA,t1\nA,t2\n", "line 3: serial A already on line 2"),
        ("serial,thing_name\nA,t1\nB,t1\n", "line 3: thing t1 already on line 2"),
        ("serial,thing_name\nA,t 1\n", "line 2: thing name"),
        ("serial,thing_name\nA/1,t1\n", "line 2: serial"),
        ("serial,thing_name\n..,t1\n", "line 2: serial '..'"),
        ("serial,thing_name,note\nA,t1,a\x00b\n", "line 2: value of note contains a NUL"),
        ("serial,thing_name\n.,t1\n", "line 2: serial '.'"),
        ("serial,thing_name\nA,%s\n" % ("t" * 100), "line 2: thing name"),
        ("serial,thing_name,a_column_name_too_long\nA,t1,x\n", "cannot be an NVS key"),
        ("serial,thing_name\n", "no devices"),
    ],
)
def test_bad_csv_rows_are_rejected_with_their_line(text: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        devices_csv.parse_devices(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), min_size=1, max_size=6))
def test_csv_parser_accepts_only_clean_rows(pairs: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["serial", "thing_name"])
    writer.writerows(pairs)
    try:
        rows = devices_csv.parse_devices(buffer.getvalue())
    except InputFileError as error:
        assert str(error).startswith("devices CSV")
        return
    assert len({r.serial for r in rows}) == len(rows) == len({r.thing_name for r in rows})


def test_bad_input_leaves_no_output(tmp_path: Path, signer: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("serial,thing_name\nA,t1\nB,t1\n")
    config = write_config(tmp_path / "batch.toml", signer)
    out = tmp_path / "out"
    code = main(["batch", "prepare", "--devices", str(devices), "--config", str(config), "--out", str(out)],
                out=io.StringIO(), err=(err := io.StringIO()))  # fmt: skip
    assert code != 0 and "line 3" in err.getvalue()
    assert not out.exists()


@pytest.mark.parametrize(
    ("registration", "nvs", "message"),
    [
        ("concurency = 4\n", "", "registration: Additional properties are not allowed ('concurency' was unexpected)"),
        ('mode = "per-device"\npolicy = "p"\nconcurrency = "eight"\n', "", "registration.concurrency: 'eight'"),
        ('mode = "per-device"\npolicy = "p"\nconcurrency = 0\n', "", "registration.concurrency: 0 is less than"),
        ('mode = "per-device"\n', "", "'policy' is a required property"),
        ('mode = "bulk"\npolicy = "p"\n', "", "'bucket' is a required property"),
        ('mode = "teleport"\n', "", "registration.mode: 'teleport' is not one of"),
        ("", 'values = "x"\n', "nvs.values: 'x' is not of type 'object'"),
        ("", 'namespace = "creds"\n', "nvs.namespace: 'creds' belongs to the PKCS#11 PAL"),
        ("", '[nvs.values]\na_key_far_too_long = "v"\n', "nvs.values: 'a_key_far_too_long' does not match"),
    ],
)
def test_batch_config_is_checked_against_its_schema(
    tmp_path: Path, signer: Path, registration: str, nvs: str, message: str
) -> None:
    config = tmp_path / "batch.toml"
    config.write_text(
        f'[batch]\npartition_table = "t.csv"\ncode_verify_cert = "{signer}"\n[registration]\n{registration}[nvs]\n{nvs}'
    )
    with pytest.raises(InputFileError) as raised:
        inputs.load_config(config)
    assert message in str(raised.value)


def test_a_corrupt_journal_is_one_line(tmp_path: Path, signer: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    code = main(["batch", "status", str(out)], out=io.StringIO(), err=(err := io.StringIO()))
    assert code == 1 and err.getvalue().startswith(f"ERROR batch journal {out / 'journal.sqlite'}: damaged")
    assert "intact" in err.getvalue() and err.getvalue().count("\n") == 1

"""The command line starts without the heavy libraries, and its copied choices equal the library's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from device_provisioning.cli import choices

HEAVY = ("boto3", "botocore", "esptool", "cryptography", "psycopg", "rich", "jsonschema")

PROBE = """
import json, sys
from device_provisioning.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})), file=sys.stderr)
"""


@pytest.mark.integration  # a fresh interpreter per command line
@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--help"],
        ["ota", "create", "--help"],
        ["batch", "flash", "--help"],
        ["flash", "--help"],
        ["codesign", "create", "--help"],
        ["verify", "--help"],
        ["ota", "rollout", "--help"],
    ],
    ids=" ".join,
)
def test_version_and_help_import_no_heavy_module(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "device-provisioning" in result.stdout
    loaded = json.loads(result.stderr.strip().splitlines()[-1])
    assert loaded == [], f"{' '.join(argv)} imported {loaded}"


def test_copied_choices_equal_the_library_constants() -> None:
    from device_provisioning.aws import ota_request
    from device_provisioning.device import app_image, credentials, project, update_rules
    from device_provisioning.flashing import proof
    from device_provisioning.fleet import inventory
    from device_provisioning.identity import codesign

    assert choices.NVS_FAMILIES == tuple(credentials.FAMILIES)
    assert choices.FIRMWARE_FAMILIES == tuple(project.FAMILIES)
    assert choices.DEFAULT_PARTITION == credentials.DEFAULT_PARTITION
    assert choices.CODE_VERIFY_LABEL == credentials.CODE_VERIFY_LABEL
    assert choices.PKCS11_ENCODINGS == credentials.PKCS11_ENCODINGS
    assert choices.VIAS == ota_request.VIAS
    assert choices.PROTOCOLS == ota_request.PROTOCOLS
    assert choices.VERIFY_CHOICES == proof.VERIFY_CHOICES
    assert choices.CHIPS == tuple(sorted(app_image.CHIP_IDS.values()))
    assert choices.MAX_SECURE_VERSION == inventory.MAX_SECURE_VERSION
    assert choices.RULE_OVERRIDES == update_rules.OVERRIDES
    assert (choices.DEFAULT_COMMON_NAME, choices.DEFAULT_DAYS, choices.MAX_DAYS) == (
        codesign.DEFAULT_COMMON_NAME,
        codesign.DEFAULT_DAYS,
        codesign.MAX_DAYS,
    )

"""The offline flash plan against a build: the table passed must be the table the build flashes, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_provisioning.device import app_image, esp_build, nvs, nvs_build
from device_provisioning.device import partition_table as pt
from device_provisioning.errors import FlashPlanError
from device_provisioning.flashing import layout
from tests.helpers import BETA_TABLE

# An image for the beta table's storage partition (0x4000 bytes): what it holds does not matter here.
NVS_IMAGE = nvs_build.build_image([nvs.NvsEntry("cfg", "line", "string", "3")], 0x4000)


def build_with(tmp_path: Path, csv_text: str) -> esp_build.EspBuild:
    return esp_build.load_build(app_image.write_placeholder_build(tmp_path / "build", pt.parse_csv(csv_text)))


def test_the_build_of_the_same_table_is_planned(tmp_path: Path) -> None:
    plan = layout.plan_flash(pt.load(BETA_TABLE), NVS_IMAGE, build=build_with(tmp_path, BETA_TABLE.read_text()))
    assert plan.nvs_region.offset == 0x310000 and plan.firmware


@pytest.mark.parametrize(
    ("line", "changed"),
    [
        # Same name, offset and size: only the subtype differs (the bootloader would read a PHY data partition
        # as a FAT one, or pick another app slot).
        ("phy_init, data, phy,", "phy_init, data, fat,"),
        ("ota_1, app, ota_1,", "ota_1, app, ota_2,"),
        ("otadata, data, ota,", "otadata, data, 0x40,"),
    ],
)
def test_a_build_table_that_differs_only_in_a_subtype_is_refused(tmp_path: Path, line: str, changed: str) -> None:
    text = BETA_TABLE.read_text()
    assert line in text
    build = build_with(tmp_path, text.replace(line, changed))
    with pytest.raises(FlashPlanError, match="differs from the build's partition table"):
        layout.plan_flash(pt.load(BETA_TABLE), NVS_IMAGE, build=build)

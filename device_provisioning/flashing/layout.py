"""What will be written where, decided and checked before any byte reaches a device.

Pure: the partition table, the NVS image and the build go in; a :class:`FlashPlan` or an error
comes out. Every refusal that can be made without a device is made here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from device_provisioning.device import nvs
from device_provisioning.device.esp_build import EspBuild, normalise_chip
from device_provisioning.device.partition_types import Partition, PartitionTable
from device_provisioning.errors import FlashPlanError

SECTOR = 0x1000


@dataclass(frozen=True)
class FlashRegion:
    """One range to write: a name, a flash offset and the bytes."""

    name: str
    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True)
class FlashPlan:
    """What to write where, checked offline against the table, the build and the NVS image."""

    chip: str | None
    nvs_partition: Partition
    nvs_region: FlashRegion
    firmware: tuple[FlashRegion, ...]
    nvs_contents: nvs.NvsImage
    nvs_encrypted: bool
    flash_mode: str = "keep"
    flash_freq: str = "keep"
    flash_size: str = "keep"
    # Device identity outside NVS (the esp_secure_cert partition of modular-OTA firmware).
    identity: tuple[FlashRegion, ...] = ()

    @property
    def regions(self) -> tuple[FlashRegion, ...]:
        return tuple(sorted((*self.firmware, *self.identity, self.nvs_region), key=lambda r: r.offset))

    @property
    def bytes_to_write(self) -> int:
        return sum(len(r.data) for r in self.regions)


def _same_layout(a: PartitionTable, b: PartitionTable) -> bool:
    key = [(p.name, p.type, p.subtype, p.offset, p.size) for p in a.partitions]
    return key == [(p.name, p.type, p.subtype, p.offset, p.size) for p in b.partitions]


def plan_flash(
    table: PartitionTable,
    nvs_image: bytes,
    *,
    partition_label: str = "storage",
    build: EspBuild | None = None,
    chip: str | None = None,
    nvs_encryption_key: bytes | None = None,
    identity_images: Sequence[tuple[str, bytes]] = (),
    flash_encryption: bool | None = None,
) -> FlashPlan:
    """Check everything that can be checked offline and return the plan.

    ``identity_images`` are (partition label, image) pairs written beside NVS (``esp_secure_cert``);
    ``flash_encryption`` is the project's setting: a plaintext image for a partition flagged
    ``encrypted`` is refused then (the firmware would decrypt it into garbage).
    """
    partition = table.nvs_partition(partition_label)
    if partition.offset % SECTOR:
        raise FlashPlanError(
            f"partition {partition.name!r} at 0x{partition.offset:x} is not aligned to a 0x{SECTOR:x} flash sector"
        )
    if len(nvs_image) != partition.size:
        raise FlashPlanError(
            f"NVS image is {len(nvs_image)} bytes (0x{len(nvs_image):x}) but partition {partition.name!r} is "
            f"0x{partition.size:x}: rebuild it with `nvs build` against this partition table"
        )
    contents = nvs.read_image(nvs_image, encryption_key=nvs_encryption_key, source="NVS image")
    # A plaintext image decodes cleanly; an NVS-encrypted one (without its key) does not.
    encrypted = nvs_encryption_key is not None or bool(contents.warnings) or not contents.entries

    requested = normalise_chip(chip) if chip else None
    if build is not None and requested is not None and build.chip != requested:
        raise FlashPlanError(
            f"--chip {requested} but the build in {build.directory} is for {build.chip}: flash the right build"
        )
    firmware: list[FlashRegion] = []
    if build is not None:
        build_table = build.partition_table()
        if build_table is not None and not _same_layout(build_table, table):
            raise FlashPlanError(
                f"{table.source} differs from the build's partition table ({build_table.source}): the device "
                "will use the build's; pass that one (--partition-table build/partition_table/partition-table.bin)"
            )
        firmware = [FlashRegion(f.name, f.offset, f.data) for f in build.files]
        starts = {p.offset: p for p in table.partitions if not p.placed_by_build}
        for region in firmware:
            holder = starts.get(region.offset)
            if holder is not None and len(region.data) > holder.size:
                raise FlashPlanError(
                    f"{region.name} is {len(region.data)} bytes but partition {holder.name!r} at 0x{holder.offset:x} "
                    f"holds 0x{holder.size:x}: enlarge the partition or shrink the app"
                )
    identity = [_identity_region(table, label, image, flash_encryption) for label, image in identity_images]
    regions = sorted(
        [*firmware, *identity, FlashRegion(partition.name, partition.offset, nvs_image)], key=lambda r: r.offset
    )
    for region in regions:
        if region.offset % SECTOR:
            raise FlashPlanError(f"{region.name} offset 0x{region.offset:x} is not aligned to 0x{SECTOR:x}")
    for before, after in zip(regions, regions[1:], strict=False):
        if after.offset < before.end:
            raise FlashPlanError(
                f"{before.name} (0x{before.offset:x}-0x{before.end:x}) overlaps {after.name} at 0x{after.offset:x}"
            )
    return FlashPlan(
        chip=build.chip if build is not None else requested,
        nvs_partition=partition,
        nvs_region=FlashRegion(partition.name, partition.offset, nvs_image),
        firmware=tuple(firmware),
        nvs_contents=contents,
        nvs_encrypted=encrypted,
        flash_mode=build.flash_mode if build else "keep",
        flash_freq=build.flash_freq if build else "keep",
        flash_size=build.flash_size if build else "keep",
        identity=tuple(identity),
    )


def _identity_region(table: PartitionTable, label: str, image: bytes, flash_encryption: bool | None) -> FlashRegion:
    partition = next((p for p in table.partitions if p.name == label), None)
    if partition is None:
        raise FlashPlanError(f"the partition table {table.source} has no {label!r} partition for the identity image")
    if len(image) != partition.size:
        raise FlashPlanError(
            f"the {label} image is {len(image)} bytes but partition {label!r} is 0x{partition.size:x}: rebuild it "
            "against this partition table"
        )
    if partition.encrypted and flash_encryption:
        raise FlashPlanError(
            f"partition {label!r} is flagged encrypted and the project enables flash encryption: the firmware "
            "would decrypt this plaintext image into garbage; write it through the chip's flash encryption "
            "(esptool write-flash --encrypt, development mode) or provision it before enabling flash encryption"
        )
    return FlashRegion(label, partition.offset, image)

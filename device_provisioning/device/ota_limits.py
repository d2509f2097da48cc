"""What the device's OTA agent can take, from the OTA library esp-aws-iot compiles in (v3.x).

The agent tracks the file in a bitmap of ``OTA_MAX_BLOCK_BITMAP_SIZE`` bytes, one bit per block of
``2^otaconfigLOG2_FILE_BLOCK_SIZE`` bytes: 128 bytes of 4 KiB blocks in the esp-aws-iot demos, so
8 × 128 × 4096 = 4 MiB. A job announcing a larger ``filesize`` makes the agent write past that
bitmap while it parses the job (memory corruption, no error), so the limit is enforced before a
job exists. Stream names have at most ``STREAM_NAME_MAX_LEN`` (44) characters, file paths fit the
demos' 260-byte buffer with its NUL, and a data protocol exists only if the firmware compiled it in.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_provisioning.errors import VerificationFailed

DEFAULT_BLOCK_SIZE = 4096  # 2^otaconfigLOG2_FILE_BLOCK_SIZE, otaconfigLOG2_FILE_BLOCK_SIZE = 12
DEFAULT_BITMAP_BYTES = 128  # OTA_MAX_BLOCK_BITMAP_SIZE
MAX_STREAM_NAME = 44  # STREAM_NAME_MAX_LEN
MAX_FILE_PATH = 259  # the demos' 260-byte path buffer, NUL included
MAX_JOB_DOCUMENT = 32 * 1024  # AWS IoT Jobs


@dataclass(frozen=True)
class DeviceLimits:
    """The OTA agent settings that bound an update; ``protocols`` is ``None`` when not known."""

    block_size: int = DEFAULT_BLOCK_SIZE
    bitmap_bytes: int = DEFAULT_BITMAP_BYTES
    protocols: tuple[str, ...] | None = None
    app_partition_size: int | None = None

    @property
    def max_image_size(self) -> int:
        return self.block_size * 8 * self.bitmap_bytes

    def check_image(self, size: int) -> list[str]:
        """Refuse an image the agent cannot track or the OTA slot cannot hold; returns the checks passed."""
        if size > self.max_image_size:
            raise VerificationFailed(
                f"pre-flight: the image is {size} bytes but the device's OTA agent tracks at most "
                f"{self.max_image_size} (8 x OTA_MAX_BLOCK_BITMAP_SIZE {self.bitmap_bytes} x "
                f"{self.block_size}-byte blocks); a larger job corrupts the agent's memory. Make the image "
                "smaller, or raise OTA_MAX_BLOCK_BITMAP_SIZE / otaconfigLOG2_FILE_BLOCK_SIZE in the firmware "
                "(then pass --ota-bitmap-bytes / --ota-block-size)"
            )
        checks = [f"image of {size} bytes within the OTA agent's {self.max_image_size}-byte limit"]
        if self.app_partition_size is not None:
            if size > self.app_partition_size:
                raise VerificationFailed(
                    f"pre-flight: the image is {size} bytes but the OTA app partition holds "
                    f"{self.app_partition_size}; enlarge ota_0/ota_1 in the partition table"
                )
            checks.append(f"image fits the {self.app_partition_size}-byte OTA app partition")
        return checks

    def check_job(self, *, protocol: str, device_path: str, stream_name: str | None) -> list[str]:
        """Refuse a job the device's agent would reject or mishandle; returns the checks passed."""
        if len(device_path) > MAX_FILE_PATH:
            raise VerificationFailed(
                f"pre-flight: the device file path has {len(device_path)} characters; the OTA demos' buffer "
                f"holds {MAX_FILE_PATH}: use a shorter --device-path"
            )
        checks = [f"file path of {len(device_path)} characters (at most {MAX_FILE_PATH})"]
        if stream_name is not None and len(stream_name) > MAX_STREAM_NAME:
            raise VerificationFailed(
                f"pre-flight: the MQTT stream name {stream_name!r} has {len(stream_name)} characters; the OTA "
                f"agent takes at most {MAX_STREAM_NAME} (STREAM_NAME_MAX_LEN): use a shorter --ota-id"
            )
        if self.protocols is not None:
            if protocol not in self.protocols:
                raise VerificationFailed(
                    f"pre-flight: the firmware enables {', '.join(self.protocols) or 'no'} data protocol(s), not "
                    f"{protocol}: every device would fail the job (OtaErrInvalidDataProtocol); use --protocol "
                    f"{self.protocols[0] if self.protocols else 'mqtt'} or enable {protocol} in the firmware"
                )
            checks.append(f"the firmware enables {protocol}")
        return checks


def check_job_document_size(document_text: str) -> None:
    """AWS IoT Jobs takes documents of at most 32 KB."""
    size = len(document_text.encode())
    if size > MAX_JOB_DOCUMENT:
        raise VerificationFailed(f"pre-flight: the job document is {size} bytes; AWS IoT takes at most 32 KB")

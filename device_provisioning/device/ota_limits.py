"""What the device's OTA agent can take: the v3 OTA library esp-aws-iot compiles in, or the modular libraries.

The agent tracks the file in a bitmap of ``OTA_MAX_BLOCK_BITMAP_SIZE`` bytes, one bit per block of
``2^otaconfigLOG2_FILE_BLOCK_SIZE`` bytes: 128 bytes of 4 KiB blocks in the esp-aws-iot demos, so
8 × 128 × 4096 = 4 MiB. A job announcing a larger ``filesize`` makes the agent write past that
bitmap while it parses the job (memory corruption, no error), so the limit is enforced before a
job exists. Stream names have at most ``STREAM_NAME_MAX_LEN`` (44) characters, file paths fit the
demos' 260-byte buffer with its NUL, and a data protocol exists only if the firmware compiled it in.

Modular OTA (FreeRTOS/iot-reference-esp32: the Jobs library's job-document parser and the MQTT
file-streams library) has no bitmap: it counts blocks of ``mqttFileDownloader_CONFIG_BLOCK_SIZE`` in
16 bits and re-requests a block forever when the file does not fit the OTA slot, so the slot is its
limit. Its parser and demo take a job id of at most 63 characters, a stream name of at most 44, one
file, MQTT only (an HTTP-first document is read as a stream name) and a whole MQTT job message of at
most 2048 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_provisioning.device.sources import Config, Evidence, ProjectSources, c_number
from device_provisioning.errors import InputFileError, VerificationFailed

DEFAULT_BLOCK_SIZE = 4096  # 2^otaconfigLOG2_FILE_BLOCK_SIZE, otaconfigLOG2_FILE_BLOCK_SIZE = 12
DEFAULT_BITMAP_BYTES = 128  # OTA_MAX_BLOCK_BITMAP_SIZE
MAX_STREAM_NAME = 44  # STREAM_NAME_MAX_LEN
MAX_FILE_PATH = 259  # the demos' 260-byte path buffer, NUL included
MAX_JOB_DOCUMENT = 32 * 1024  # AWS IoT Jobs
MODULAR_BLOCK_SIZE = 512  # mqttFileDownloader_CONFIG_BLOCK_SIZE in esp-aws-iot's port config
MODULAR_MAX_BLOCKS = 0xFFFF  # the demo's 16-bit block counter
MODULAR_MAX_JOB_ID = 63
MODULAR_MAX_MESSAGE = 2048  # the demo's MQTT receive buffer for a job message
# The Jobs service's envelope around the document on jobs/notify-next, with 10-digit timestamps.
_ENVELOPE = (
    '{"timestamp":1700000000,"execution":{"jobId":"%s","status":"QUEUED","queuedAt":1700000000,'
    '"lastUpdatedAt":1700000000,"versionNumber":1,"executionNumber":1,"jobDocument":%s}}'
)


@dataclass(frozen=True)
class DeviceLimits:
    """The OTA agent settings that bound an update; ``protocols`` is ``None`` when not known."""

    block_size: int = DEFAULT_BLOCK_SIZE
    bitmap_bytes: int = DEFAULT_BITMAP_BYTES
    protocols: tuple[str, ...] | None = None
    app_partition_size: int | None = None
    agent: str = "ota-v3"  # "ota-v3" (bitmap) or "modular" (16-bit block counter, no bitmap)

    @property
    def max_image_size(self) -> int:
        if self.agent == "modular":
            return self.block_size * MODULAR_MAX_BLOCKS
        return self.block_size * 8 * self.bitmap_bytes

    def check_image(self, size: int) -> list[str]:
        """Refuse an image the agent cannot track or the OTA slot cannot hold; returns the checks passed."""
        if self.agent == "modular":
            return self._check_modular_image(size)
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

    def _check_modular_image(self, size: int) -> list[str]:
        if size > self.max_image_size:
            raise VerificationFailed(
                f"pre-flight: the image is {size} bytes but the modular OTA demo counts at most {MODULAR_MAX_BLOCKS} "
                f"blocks of {self.block_size} bytes ({self.max_image_size} bytes); make the image smaller"
            )
        if self.app_partition_size is None:  # the slot is judged elsewhere (the fleet pre-flight, per device)
            return [f"image of {size} bytes within the modular OTA demo's {self.max_image_size}-byte block counter"]
        if size > self.app_partition_size:
            raise VerificationFailed(
                f"pre-flight: the image is {size} bytes but the OTA app partition holds {self.app_partition_size}; "
                "the modular OTA demo would re-request a block forever: make the image smaller or enlarge "
                "ota_0/ota_1 in the partition table"
            )
        return [
            f"image of {size} bytes fits the {self.app_partition_size}-byte OTA app partition "
            "(modular OTA: no bitmap, the slot is the limit)"
        ]

    def check_job(
        self, *, protocol: str, device_path: str, stream_name: str | None, job_id: str | None = None
    ) -> list[str]:
        """Refuse a job the device's agent would reject or mishandle; returns the checks passed."""
        checks = self._check_modular_job(protocol, job_id) if self.agent == "modular" else []
        if len(device_path) > MAX_FILE_PATH:
            raise VerificationFailed(
                f"pre-flight: the device file path has {len(device_path)} characters; the OTA demos' buffer "
                f"holds {MAX_FILE_PATH}: use a shorter --device-path"
            )
        checks.append(f"file path of {len(device_path)} characters (at most {MAX_FILE_PATH})")
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

    def _check_modular_job(self, protocol: str, job_id: str | None) -> list[str]:
        if protocol != "mqtt":
            raise VerificationFailed(
                f"pre-flight: modular OTA firmware (iot-reference-esp32) takes its file over MQTT streams only; an "
                f"{protocol.upper()} job's URL would be read as a stream name: use --protocol mqtt"
            )
        checks = ["data over MQTT (the modular OTA demo's only protocol)"]
        if job_id is not None:
            if len(job_id) > MODULAR_MAX_JOB_ID:
                raise VerificationFailed(
                    f"pre-flight: the job id {job_id!r} has {len(job_id)} characters; the modular OTA demo takes at "
                    f"most {MODULAR_MAX_JOB_ID}: use a shorter --ota-id"
                )
            checks.append(f"job id of {len(job_id)} characters (at most {MODULAR_MAX_JOB_ID})")
        return checks

    def check_message(self, document_text: str, job_id: str) -> list[str]:
        """Modular OTA: the job message as the device receives it must fit the demo's 2048-byte buffer."""
        if self.agent != "modular":
            return []
        size = len((_ENVELOPE % (job_id, document_text)).encode())
        if size > MODULAR_MAX_MESSAGE:
            raise VerificationFailed(
                f"pre-flight: the job message the device receives is about {size} bytes; the modular OTA demo "
                f"takes at most {MODULAR_MAX_MESSAGE}: use a shorter --device-path or --ota-id"
            )
        return [f"job message of about {size} bytes (at most {MODULAR_MAX_MESSAGE})"]


def check_job_document_size(document_text: str) -> None:
    """AWS IoT Jobs takes documents of at most 32 KB."""
    size = len(document_text.encode())
    if size > MAX_JOB_DOCUMENT:
        raise VerificationFailed(f"pre-flight: the job document is {size} bytes; AWS IoT takes at most 32 KB")


def read_v3(config: Config, sources: ProjectSources) -> tuple[int, int, tuple[str, ...], list[Evidence]]:
    """The v3 OTA agent's block size, bitmap and protocols (Kconfig on master, ota_config.h on beta)."""
    defines = sources.defines
    found = config.get("CONFIG_LOG2_FILE_BLOCK_SIZE") or defines.get("otaconfigLOG2_FILE_BLOCK_SIZE")
    if found is None:
        block_size = DEFAULT_BLOCK_SIZE
        block = Evidence("block size", "4096 (2^12)", "default (CONFIG_LOG2_FILE_BLOCK_SIZE / otaconfigLOG2_... 12)")
    else:
        log2 = c_number(found[0])
        if log2 is None or not 8 <= log2 <= 16:
            raise InputFileError(f"{found[1]}: otaconfigLOG2_FILE_BLOCK_SIZE {found[0][:40]!r} is not a number 8-16")
        block_size, block = 1 << log2, Evidence("block size", f"{1 << log2} (2^{log2})", found[1])
    bitmap = DEFAULT_BITMAP_BYTES
    bitmap_source = "the OTA library (ota_private.h defines OTA_MAX_BLOCK_BITMAP_SIZE 128U)"
    if "OTA_MAX_BLOCK_BITMAP_SIZE" in defines:
        text, where = defines["OTA_MAX_BLOCK_BITMAP_SIZE"]
        value = c_number(text)
        if value is None or not 1 <= value <= 0xFFFF:
            raise InputFileError(f"{where}: OTA_MAX_BLOCK_BITMAP_SIZE {text[:40]!r} is not a number from 1 to 65535")
        if value != bitmap:
            bitmap_source = (
                f"the OTA library: {where} says {value}, but ota_private.h defines OTA_MAX_BLOCK_BITMAP_SIZE "
                "again as 128U after including ota_config.h, so the agent's bitmap stays 128 bytes"
            )
    kconfig = [config.get("CONFIG_OTA_DATA_OVER_MQTT"), config.get("CONFIG_OTA_DATA_OVER_HTTP")]
    if any(kconfig):
        # Kconfig defaults: MQTT on, HTTP off (esp-aws-iot's libraries/ota-for-aws-iot-embedded-sdk/Kconfig).
        mqtt = config.get("CONFIG_OTA_DATA_OVER_MQTT") is None or config.enabled("CONFIG_OTA_DATA_OVER_MQTT")
        protocols = tuple(n for n, on in (("mqtt", mqtt), ("http", config.enabled("CONFIG_OTA_DATA_OVER_HTTP"))) if on)
        where = ", ".join(found[1] for found in kconfig if found)
    elif "configENABLED_DATA_PROTOCOLS" in defines:
        text, where = defines["configENABLED_DATA_PROTOCOLS"]
        protocols = tuple(name for name in ("mqtt", "http") if f"OTA_DATA_OVER_{name.upper()}" in text)
    else:
        protocols, where = ("mqtt",), "default (OTA library: data over MQTT)"
    return (
        block_size,
        bitmap,
        protocols,
        [
            block,
            Evidence("block bitmap", f"{bitmap} bytes", bitmap_source),
            Evidence("data protocols", ",".join(protocols), where),
        ],
    )


def read_modular(sources: ProjectSources) -> tuple[int, int, tuple[str, ...], list[Evidence]]:
    """Modular OTA: the file-streams block size (only the 16-bit counter's bound depends on it), MQTT only."""
    found = sources.defines.get("mqttFileDownloader_CONFIG_BLOCK_SIZE")
    block_size = c_number(found[0]) if found else None
    if found and block_size is not None and not 256 <= block_size <= 0x20000:
        # AWS IoT takes blocks of 256 bytes to 128 KiB (the library's own range check).
        raise InputFileError(f"{found[1]}: mqttFileDownloader_CONFIG_BLOCK_SIZE {block_size} is not 256 to 131072")
    if block_size is not None and found:
        where = found[1]
    elif found:  # an expression of Kconfig values: the smallest block AWS takes bounds the counter lowest
        block_size, where = 256, f"{found[1]} ({found[0][:40]}; taken as AWS's smallest block)"
    else:
        block_size, where = MODULAR_BLOCK_SIZE, "default (esp-aws-iot's MQTT file-streams port config)"
    return (
        block_size,
        0,
        ("mqtt",),
        [
            Evidence("block size", str(block_size), where),
            Evidence("block bitmap", "none (16-bit block counter)", "modular OTA: MQTT file streams keep no bitmap"),
            Evidence("data protocols", "mqtt", "modular OTA demo: the job's protocols[0] must be MQTT"),
        ],
    )

"""Firmware images: a valid placeholder ESP32 app for demos and tests, made with esptool's writer."""

from __future__ import annotations

import hashlib

from esptool.bin_image import ELFSection, ESP32FirmwareImage, LoadFirmwareImage

from device_provisioning.errors import InputFileError

PLACEHOLDER_BANNER = b"esp-ota-provisioning PLACEHOLDER FIRMWARE: not a real application, do not flash to a product\x00"
# ESP32 memory map: flash-mapped read-only data and internal instruction RAM.
DROM_ADDRESS = 0x3F400020
IRAM_ADDRESS = 0x40080000


def placeholder_app_image(
    *, version: str = "0.0.1", embedded_pem: bytes | None = None, payload_size: int = 4096
) -> bytes:
    """A valid ESP32 app image (``esptool image-info`` accepts it) that does nothing useful.

    ``embedded_pem`` is stored NUL-terminated, as ESP-IDF embeds ``aws_codesign.crt`` with
    ``EMBED_TXTFILES``, so checks that look for the certificate in an app image can be exercised.
    """
    rodata = PLACEHOLDER_BANNER + f"version={version}\x00".encode()
    if embedded_pem is not None:
        rodata += embedded_pem + b"\x00"
    # Deterministic filler so images of different versions differ and sizes are realistic.
    filler = hashlib.shake_256(f"placeholder {version}".encode()).digest(payload_size)
    image = ESP32FirmwareImage()
    image.entrypoint = IRAM_ADDRESS
    image.segments = [
        # Sections as elf2image would hand them over (the writer pads them to 4 bytes).
        ELFSection(b".flash.rodata", DROM_ADDRESS, rodata + filler, flags=0),
        ELFSection(b".iram0.text", IRAM_ADDRESS, b"\x00" * 256, flags=0),
    ]
    saved = image.save(None)
    assert saved is not None
    return saved


def check_app_image(data: bytes, source: str, chip: str = "esp32") -> None:
    """Refuse a file that is not an ESP app image (magic, segments, checksum, SHA-256 digest)."""
    try:
        image = LoadFirmwareImage(chip, data)
    except Exception as error:  # esptool raises FatalError or struct errors on garbage
        raise InputFileError(f"{source}: not an {chip} app image ({error}); give build/<project>.bin") from None
    if getattr(image, "append_digest", False) and image.stored_digest != image.calc_digest:
        raise InputFileError(f"{source}: the app image's SHA-256 digest does not match; the file is corrupt")

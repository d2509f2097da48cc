"""What the log has shown so far, as an engineer reading it top to bottom keeps in mind.

Whether the network is up, whether the credentials loaded, how large the job said the file is and
how many blocks arrived, which code-signing certificate the PAL read, whether flash encryption is on
and which NVS-encryption scheme registered. Each fact keeps the line that showed it (a
:class:`Mark`), so a finding whose ranking it moves can name that line.

Every test is a substring search or a match anchored after one, so a line costs time linear in its
length whatever it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from device_provisioning.device import ota_limits


@dataclass(frozen=True)
class Mark:
    """One earlier log line and what it showed."""

    line_number: int
    line: str
    says: str

    def to_json(self) -> dict[str, object]:
        return {"line_number": self.line_number, "line": self.line, "says": self.says}


_DIGITS = re.compile(r"[\s:=\[\]]*(\d{1,12})")

NETWORK_UP = ("sta ip:", "got ip", "got_ip", "ipv4 address:", "connected with ip", "eth ip:")
NETWORK_DOWN = (
    "retry to connect to the ap",
    "connect to the ap fail",
    "failed to connect to the ap",
    "failed to connect to ap",
    "no ap found",
    "sta_disconnected",
    "wi-fi disconnected",
    "wifi disconnected",
    "wifi:disconnected",
    "disconnected from ap",
    "wifi: disconnected",
    "connecting to the ap again",  # ESP-IDF's provisioning examples on WIFI_EVENT_STA_DISCONNECTED
)
FLASH_ENCRYPTION_ON = (
    "flash encryption mode is",
    "flash encryption is enabled",
    "flash_encrypt: flash encryption mode",
    "flash encryption: enabled",
)
NVS_SCHEME = (
    ("registering hmac-based scheme", "hmac"),
    ("registering flash encryption-based scheme", "flash-encryption"),
)
# The PKCS #11 PAL writing the device's credentials into 'storage' (amazon-freertos iot_pkcs11_pal.c
# "Writing file %s", corePKCS11 "Writing certificate into label"): a lookup that found nothing before
# it was a first boot provisioning itself, not credentials that are missing.
CREDENTIALS_WRITTEN = ("writing file p11_", "writing certificate into label", "writing private key into label")
TEST_CERTIFICATE = ("using certificate in ota_config.h", "using aws_ota_codesigner_certificate.h")
SIZE_KEYS = ('"filesize":', "[filesize:", "filesize:", "file size:", "file size =", "filesize=")
# The OTA agent's block counters (ota.c, the demos' statistics). The modular demo's "Downloaded block
# X of Y" is left out: it has no bitmap, so its block count says nothing about the agent's limit.
BLOCK_KEYS = ("block index=", "received file block", "ingested received block")

TRIGGERS = (
    *NETWORK_UP,
    *NETWORK_DOWN,
    *FLASH_ENCRYPTION_ON,
    *(key for key, _ in NVS_SCHEME),
    *TEST_CERTIFICATE,
    *CREDENTIALS_WRITTEN,
    *SIZE_KEYS,
    *BLOCK_KEYS,
    "received:",
    "number of blocks remaining",
)


def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(word) for word in words))


_PATTERN = _pattern(TRIGGERS)
_SIZE_OR_BLOCK = _pattern((*SIZE_KEYS, *BLOCK_KEYS, "received:", "number of blocks remaining"))


def number_after(low: str, key: str) -> int | None:
    """The number printed right after the first ``key`` in ``low``, if one is."""
    at = low.find(key)
    if at < 0:
        return None
    match = _DIGITS.match(low, at + len(key))
    return int(match.group(1)) if match else None


class Evidence:
    """The facts read so far; :meth:`observe` each line in order before judging it."""

    def __init__(self, limits: ota_limits.DeviceLimits | None = None) -> None:
        self.limits = limits or ota_limits.DeviceLimits()
        self.network_up: Mark | None = None
        self.network_lost: Mark | None = None
        self.credentials_failed: Mark | None = None
        self.credentials_written: Mark | None = None
        self.test_certificate: Mark | None = None
        self.flash_encryption: Mark | None = None
        self.nvs_scheme: tuple[str, Mark] | None = None
        self.announced_size: tuple[int, Mark] | None = None
        self.blocks: tuple[int, Mark] | None = None

    def observe(self, number: int, line: str, low: str) -> None:
        if not _PATTERN.search(low):
            return
        if any(key in low for key in NETWORK_UP):
            self.network_up = Mark(number, line, "the device got an IP address")
        elif any(key in low for key in NETWORK_DOWN):
            self.network_lost = Mark(number, line, "Wi-Fi was not connected")
        if any(key in low for key in FLASH_ENCRYPTION_ON):
            self.flash_encryption = Mark(number, line, "flash encryption is on")
        for key, scheme in NVS_SCHEME:
            if key in low:
                self.nvs_scheme = (scheme, Mark(number, line, f"NVS encryption uses the {scheme} scheme"))
        if any(key in low for key in CREDENTIALS_WRITTEN):
            self.credentials_written = Mark(number, line, "the firmware wrote its credentials into storage")
            self.credentials_failed = None
        if any(key in low for key in TEST_CERTIFICATE):
            self.test_certificate = Mark(number, line, "the PAL read the example's test certificate")
        self._sizes(number, line, low)

    def _sizes(self, number: int, line: str, low: str) -> None:
        if not _SIZE_OR_BLOCK.search(low):
            return
        for key in SIZE_KEYS:
            size = number_after(low, key)
            if size is not None and (self.announced_size is None or size > self.announced_size[0]):
                self.announced_size = (size, Mark(number, line, f"the job announces a file of {size} bytes"))
        counted = None
        for key in BLOCK_KEYS:
            index = number_after(low, key)
            if index is not None:
                counted = max(counted or 0, index + 1)
        if "received:" in low and "queued:" in low:
            counted = max(counted or 0, number_after(low, "received:") or 0)
        remaining = number_after(low, "number of blocks remaining")
        if remaining is not None and self.blocks is None:
            counted = remaining + 1  # printed after the first block is in
        if counted is not None and (self.blocks is None or counted > self.blocks[0]):
            self.blocks = (counted, Mark(number, line, f"{counted} blocks of the file counted"))

    def record_credentials_failure(self, number: int, line: str, what: str) -> None:
        self.credentials_failed = Mark(number, line, what)

    def network_down(self) -> Mark | None:
        """The line that showed Wi-Fi down, if no address was obtained after it."""
        lost, up = self.network_lost, self.network_up
        if lost is not None and (up is None or up.line_number < lost.line_number):
            return lost
        return None

    def beyond_agent_limit(self) -> Mark | None:
        """The line showing the file is beyond what the OTA agent's block bitmap tracks, if one did."""
        if self.announced_size is not None and self.announced_size[0] > self.limits.max_image_size:
            return self.announced_size[1]
        max_blocks = 8 * self.limits.bitmap_bytes
        if self.blocks is not None and self.blocks[0] > max_blocks:
            count, mark = self.blocks
            return Mark(
                mark.line_number,
                mark.line,
                f"{count} blocks counted: more than the {max_blocks} the agent's bitmap tracks",
            )
        return None

"""Which versions each firmware family's OTA code accepts, keyed by the OTA agent the family runs (device/family.py).

- ``beta``, ``pkcs11``, ``embedded`` run the OTA agent v3 (ota-for-aws-iot-embedded-sdk ``ota.c``): after
  the reboot, in self test, ``validateUpdateVersion`` compares the new image's ``appFirmwareVersion``
  (``APP_VERSION_MAJOR/MINOR/BUILD``) with the version that did the update (the job's ``updatedBy``):
  equal is ``OtaErrSameFirmwareVersion``, lower is ``OtaErrDowngradeNotAllowed``, and the image is rejected
  and rolled back; ``otaconfigAllowDowngrade = 1`` (esp-aws-iot Kconfig ``CONFIG_ALLOW_DOWNGRADE``) skips the
  comparison. The self test also needs the image pending verify, which ESP-IDF sets only with
  ``CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE``: without it every update ends ``OtaErrImageStateMismatch``.
- ``modular`` (FreeRTOS/iot-reference-esp32, ``ota_over_mqtt_demo.c`` with the Jobs parser and MQTT file
  streams): the demo's guide requires a version (``CONFIG_GRI_OTA_DEMO_APP_VERSION_*``) higher than the
  running one ("or else OTA will not proceed") and has no setting that allows another.
"""

from __future__ import annotations

from collections.abc import Callable

from device_provisioning.device.update_rules import DeviceState, Finding, FirmwareSettings

# (image version, device version, firmware settings) -> findings; versions are major.minor.build.
VersionRule = Callable[[str, str, FirmwareSettings], list[Finding]]
# The OTA agent's AppVersion32: major and minor are 8 bits, build 16 bits.
_LIMITS = (255, 255, 65535)


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``1.3.0`` (or ``v1.3.0``) as the OTA agent's AppVersion32 parts; None when it is not one."""
    parts = text.strip().removeprefix("v").split(".")
    if len(parts) != 3 or not all(part.isdigit() and len(part) <= 5 for part in parts):
        return None
    numbers = (int(parts[0]), int(parts[1]), int(parts[2]))
    return numbers if all(n <= limit for n, limit in zip(numbers, _LIMITS, strict=True)) else None


def _compare(image: str, device: str, who: str, fix: str) -> list[Finding]:
    new, running = parse_version(image), parse_version(device)
    if new is None or running is None or new > running:
        return []
    if new == running:
        return [Finding("same-version", f"the image is v{image} and the device runs v{device}: {who}; {fix}")]
    return [Finding("lower-version", f"the image is v{image}, below the v{device} the device runs: {who}; {fix}")]


def ota_agent_v3(image: str, device: str, settings: FirmwareSettings) -> list[Finding]:
    """ota.c ``validateUpdateVersion``, skipped when the firmware sets ``otaconfigAllowDowngrade``."""
    if settings.allow_downgrade:
        return []
    return _compare(
        image,
        device,
        "the OTA agent rejects it in self test and rolls back",
        "raise APP_VERSION_MAJOR/MINOR/BUILD in the image",
    )


def modular_demo(image: str, device: str, settings: FirmwareSettings) -> list[Finding]:
    """iot-reference-esp32: only a higher ``CONFIG_GRI_OTA_DEMO_APP_VERSION_*`` proceeds."""
    return _compare(
        image,
        device,
        "the modular OTA demo proceeds only with a higher version",
        "raise CONFIG_GRI_OTA_DEMO_APP_VERSION_* in the image",
    )


# Keyed by the family's OTA agent (device/family.py), so a family registered there needs no entry here.
VERSION_RULES: dict[str, VersionRule] = {
    "ota-v3": ota_agent_v3,
    "modular": modular_demo,
}
# Agents that self-test the new image through the platform's image state.
SELF_TEST_NEEDS_ROLLBACK = frozenset({"ota-v3"})


def _agent(family: str | None) -> str | None:
    from device_provisioning.device import family as families

    return families.get(family).agent if family is not None and family in families.ALL else None


def version_findings(image_version: str | None, device: DeviceState, settings: FirmwareSettings) -> list[Finding]:
    """The family's version rule, and the self-test rule; nothing when a version is not known."""
    found = []
    agent = _agent(device.family)
    if agent in SELF_TEST_NEEDS_ROLLBACK and settings.rollback is False:
        found.append(
            Finding(
                "self-test-without-rollback",
                "the firmware has CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE off: after the reboot the OTA agent finds "
                "the image not pending verify and rejects it (job reason 0x00000011); enable rollback in the "
                "firmware the devices run",
            )
        )
    rule = VERSION_RULES.get(agent or "")
    if rule is not None and image_version and device.app_version:
        found += rule(image_version, device.app_version, settings)
    return found

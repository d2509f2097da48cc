"""Firmware families: every rule that depends on which firmware the devices run, in one place.

A family says where the firmware keeps the code-verification certificate (NVS ``storage``/``creds``/
``P11_CSK`` read as a string or a blob, or compiled into the app), what the OTA job's ``certfile``
means to it, which OTA agent bounds an update (the v3 OTA agent with its block bitmap, or the modular
Jobs parser + MQTT file streams), where the device's own identity lives (NVS or ``esp_secure_cert``),
whether it ever reads claim credentials, and how to recognise it in a project's sources.

Adding a family is one :func:`register` call; everything else (``project show``, ``nvs build``,
``batch prepare``, the pre-flight, inventories, rotation plans, the CLI's choices) asks this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from device_provisioning import contract
from device_provisioning.device.sources import Evidence, ProjectSources
from device_provisioning.errors import InputFileError

CertificateHome = Literal["nvs", "app"]
NvsKind = Literal["string", "blob"]
Agent = Literal["ota-v3", "modular"]
IdentityHome = Literal["nvs", "esp_secure_cert"]
# A detector returns what it saw (for the evidence line) and where, or None.
Detector = Callable[[ProjectSources], tuple[str, str] | None]

# The component and headers only modular-OTA firmware has (the v3 agent and the modular libraries share
# esp_secure_cert_mgr and most Kconfig names, so those prove nothing).
MODULAR_COMPONENT = "aws-iot-core-mqtt-file-streams-embedded-c"
MODULAR_HEADERS = ("job_parser.h", "MQTTFileDownloader.h")
_BUILD_FILES = ["CMakeLists.txt", "main/CMakeLists.txt", "main/idf_component.yml", "idf_component.yml"]


@dataclass(frozen=True)
class Family:
    """One firmware family's rules."""

    name: str
    summary: str
    certificate_home: CertificateHome
    agent: Agent
    detect: Detector | None = None
    # How the PKCS#11 PAL reads P11_CSK (nvs_get_str / nvs_get_blob); None when NVS is never read for it.
    nvs_kind: NvsKind | None = None
    # The job's certfile must begin with this to reach the certificate; None: the firmware ignores certfile.
    certfile_prefix: str | None = None
    identity_home: IdentityHome = "nvs"
    reads_claim_credentials: bool = True
    # Detectors run in this order (lower first): more specific evidence before more general.
    order: int = 100

    @property
    def reads_nvs_certificate(self) -> bool:
        return self.certificate_home == "nvs"

    def certfile_rule(self) -> str:
        if self.certfile_prefix is None:
            return "ignored (the firmware verifies with the certificate it holds)"
        return f"must begin with {self.certfile_prefix!r}"


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (a name can be registered once); returns it."""
    if family.name in _REGISTRY:
        raise ValueError(f"firmware family {family.name!r} is already registered")
    if family.certificate_home == "nvs" and family.nvs_kind is None:
        raise ValueError(f"firmware family {family.name!r} reads NVS: give its nvs_kind")
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (for tests that register a throw-away one)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Family:
    """The family called ``name``; raises :class:`InputFileError` naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputFileError(f"firmware family {name!r}: use one of {', '.join(_REGISTRY)}") from None


def families() -> list[Family]:
    return list(_REGISTRY.values())


class Names:
    """The registered family names, read when asked (so argparse ``choices`` see families added later)."""

    def __init__(self, predicate: Callable[[Family], bool] = lambda family: True) -> None:
        self._predicate = predicate

    def _names(self) -> list[str]:
        return [family.name for family in _REGISTRY.values() if self._predicate(family)]

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return ", ".join(self._names())


ALL = Names()
NVS_CERTIFICATE = Names(lambda family: family.reads_nvs_certificate)


def detect(sources: ProjectSources) -> tuple[Family | None, Evidence]:
    """The family the project's sources show, with the evidence; ``None`` when nothing tells."""
    for family in sorted(_REGISTRY.values(), key=lambda f: f.order):
        found = family.detect(sources) if family.detect else None
        if found is not None:
            what, where = found
            return family, Evidence("family", f"{family.name} ({what})", where)
    return None, Evidence("family", "unknown", "no evidence in main/, CMakeLists.txt or the NVS input CSVs")


def _modular(sources: ProjectSources) -> tuple[str, str] | None:
    where = sources.first_line_with(_BUILD_FILES, MODULAR_COMPONENT)
    if where:
        return f"requires {MODULAR_COMPONENT}", where
    for header in MODULAR_HEADERS:
        if where := sources.include(header):
            return f"includes {header}", where
    return None


def _embedded(sources: ProjectSources) -> tuple[str, str] | None:
    where = sources.first_line_with(["main/*.c"], "otaPal_SetCodeSigningCertificate") or sources.first_line_with(
        ["CMakeLists.txt", "main/CMakeLists.txt"], "aws_codesign.crt"
    )
    return ("certificate compiled into the app", where) if where else None


def _p11_csk_row(sources: ProjectSources) -> tuple[str, str] | None:
    """The NVS input CSV row that writes P11_CSK: its encoding and where."""
    for fields, where in sources.csv_rows():
        if fields[:2] == ["P11_CSK", "file"] and len(fields) >= 3:
            return fields[2], where
    return None


def _beta(sources: ProjectSources) -> tuple[str, str] | None:
    row = _p11_csk_row(sources)
    if row is not None:
        return ("P11_CSK read as an NVS string", row[1]) if row[0] == "string" else None
    if "otapalconfigCODE_SIGNING_CERTIFICATE" in sources.defines:
        where = sources.defines["otapalconfigCODE_SIGNING_CERTIFICATE"][1]
        return "PKCS#11 PAL with the ota_config.h fallback certificate", where
    return None


def _pkcs11(sources: ProjectSources) -> tuple[str, str] | None:
    row = _p11_csk_row(sources)
    return ("P11_CSK read as an NVS blob", row[1]) if row is not None and row[0] != "string" else None


BETA = register(
    Family(
        "beta",
        "esp-aws-iot release/beta: the PKCS#11 PAL reads storage/creds/P11_CSK as an NVS string (PEM)",
        "nvs",
        "ota-v3",
        _beta,
        nvs_kind="string",
        certfile_prefix=contract.CODE_VERIFY_LABEL,
        # The beta PAL maps no claim labels: claim credentials in its image are never read.
        reads_claim_credentials=False,
        order=30,
    )
)
PKCS11 = register(
    Family(
        "pkcs11",
        "master/LTS PKCS#11 PAL: storage/creds/P11_CSK read as an NVS blob (DER, or PEM+NUL)",
        "nvs",
        "ota-v3",
        _pkcs11,
        nvs_kind="blob",
        order=30,
    )
)
EMBEDDED = register(
    Family(
        "embedded",
        "esp-aws-iot master/LTS OTA demos: main/certs/aws_codesign.crt compiled into the app",
        "app",
        "ota-v3",
        _embedded,
        order=20,
    )
)
MODULAR = register(
    Family(
        "modular",
        "modular OTA (FreeRTOS/iot-reference-esp32): Jobs parser + MQTT file streams, certificate compiled in, "
        "device identity in esp_secure_cert",
        "app",
        "modular",
        _modular,
        identity_home="esp_secure_cert",
        order=10,
    )
)

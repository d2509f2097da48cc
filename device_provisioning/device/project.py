"""The device, as its ESP-IDF firmware project defines it: read from the project directory, not assumed.

ESP-IDF's own answer comes first: when the project was built or configured, ``build/config/
sdkconfig.json`` holds every Kconfig value resolved and ``build/flasher_args.json`` every flash offset
(:mod:`build_answer`), used when at least as new as the config files. Otherwise ``sdkconfig`` (or,
before the first build, ``sdkconfig.defaults`` and ``sdkconfig.defaults.<target>``) plus the Kconfig
defaults that decide what we write (:mod:`kconfig_defaults`): flash size, table offset, NVS encryption
and its key scheme, the secure boot version. The sources tell the firmware family (:mod:`family`),
which says where the code-verification certificate and the device identity live and which OTA agent
limits apply (:mod:`ota_limits`).

Every derived value keeps the evidence it came from (file and line, the build, or "default" with its
Kconfig source), so ``project show`` can say why it believes what it prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_provisioning.device import build_answer, esp_build, ota_limits, partition_table, partition_types
from device_provisioning.device import family as families
from device_provisioning.device import kconfig_defaults as defaults
from device_provisioning.device.sources import Config, Evidence, ProjectSources, read_config
from device_provisioning.errors import InputFileError

__all__ = ["Evidence", "ProjectProfile", "load_project"]

BUILT_TABLE = Path("build") / "partition_table" / "partition-table.bin"
EMBEDDED_CERTIFICATE = Path("main") / "certs" / "aws_codesign.crt"
FAMILIES = families.ALL
DEFAULT_TARGET = "esp32"
FLASH_SIZES_MB = (1, 2, 4, 8, 16, 32, 64, 128)  # ESP-IDF's ESPTOOLPY_FLASHSIZE choices
SECURE_CERT_LABEL = "esp_secure_cert"
SECURE_CERT_TYPE = 0x3F


@dataclass(frozen=True)
class NvsSecurity:
    """NVS encryption as the firmware resolves it: on/off, the key scheme and the HMAC eFuse key id."""

    encryption: bool
    scheme: str | None  # "flash_enc" (nvs_keys partition), "hmac" (keys derived from an eFuse HMAC key), "none"
    hmac_key_id: int | None


@dataclass(frozen=True)
class ProjectProfile:
    """What the firmware project says about its devices; explicit command-line options override it."""

    directory: Path
    target: str
    flash_size: int
    table: partition_types.PartitionTable
    table_source: str
    secure_boot: partition_types.SecureBoot
    flash_encryption: bool
    nvs_encryption: bool
    rollback: bool
    block_size: int
    bitmap_bytes: int
    protocols: tuple[str, ...]
    family: str | None
    evidence: tuple[Evidence, ...]
    nvs_security: NvsSecurity = NvsSecurity(False, None, None)
    build: build_answer.FlasherArgs | None = None
    # CONFIG_ESP_SECURE_CERT_DS_PERIPHERAL: the esp_secure_cert key is encrypted for the chip's DS peripheral.
    secure_cert_ds: bool = False

    @property
    def table_offset(self) -> int:
        return self.table.table_offset

    @property
    def build_dir(self) -> Path:
        return self.directory / "build"

    @property
    def rules(self) -> families.Family | None:
        """The family's rules (where the certificate and identity live, which limits apply)."""
        return None if self.family is None else families.get(self.family)

    def secure_cert_partition(self) -> partition_types.Partition | None:
        """The ``esp_secure_cert`` partition esp_secure_cert_mgr reads (label and type 0x3F), if the table has it."""
        return next(
            (p for p in self.table.partitions if p.name == SECURE_CERT_LABEL and p.type == SECURE_CERT_TYPE), None
        )

    def built_app(self) -> Path | None:
        """The app image of the project's last build (``build/flasher_args.json``), if it was built."""
        if not (self.build_dir / esp_build.FLASHER_ARGS).is_file():
            return None
        app = esp_build.load_build(self.build_dir).file("app")
        return None if app is None else app.path

    def limits(self) -> ota_limits.DeviceLimits:
        """The OTA agent limits and app slot size an update must fit."""
        slots = [p.size for p in self.table.partitions if p.type == partition_types.APP and 0x10 <= p.subtype <= 0x1F]
        agent = self.rules.agent if self.rules else "ota-v3"
        return ota_limits.DeviceLimits(
            self.block_size, self.bitmap_bytes, self.protocols, min(slots, default=None), agent=agent
        )

    def to_json(self) -> dict[str, Any]:
        limits = self.limits()
        storage = next((p for p in self.table.partitions if p.name == "storage"), None)
        secure_cert = self.secure_cert_partition()
        rules = self.rules
        ota: dict[str, Any] = {
            "agent": limits.agent,
            "block_size": self.block_size,
            "bitmap_bytes": self.bitmap_bytes,
            # The v3 agent's own bound (its bitmap); modular OTA has none but the slot.
            "max_image_size": limits.max_image_size
            if limits.agent == "ota-v3"
            else min(limits.max_image_size, limits.app_partition_size or limits.max_image_size),
            "app_partition_size": limits.app_partition_size,
            "protocols": list(self.protocols),
            "rollback": self.rollback,
            "certfile": rules.certfile_rule() if rules else None,
        }
        if limits.agent == "modular":
            ota |= {
                "max_signature_bytes": 384,
                "max_stream_name": ota_limits.MAX_STREAM_NAME,
                "max_job_id": ota_limits.MODULAR_MAX_JOB_ID,
                "max_mqtt_message": ota_limits.MODULAR_MAX_MESSAGE,
                "files_per_job": 1,
            }
        return {
            "project": str(self.directory),
            "target": self.target,
            "flash_size": self.flash_size,
            "partition_table": {
                "source": self.table_source,
                "table_offset": f"0x{self.table_offset:x}",
                "storage_offset": None if storage is None else f"0x{storage.offset:x}",
                "esp_secure_cert_offset": None if secure_cert is None else f"0x{secure_cert.offset:x}",
            },
            "secure_boot": self.secure_boot,
            "flash_encryption": self.flash_encryption,
            "nvs_encryption": self.nvs_encryption,
            "nvs_key_scheme": self.nvs_security.scheme,
            "nvs_hmac_key_id": self.nvs_security.hmac_key_id,
            "ota": ota,
            "family": self.family,
            "certificate_home": rules.certificate_home if rules else None,
            "identity_home": rules.identity_home if rules else None,
            "build": None if self.build is None else self.build.to_json(),
            "evidence": [item.to_json() for item in self.evidence],
        }


def _config_files(project: Path) -> list[Path]:
    """``sdkconfig`` when the project was configured, else the defaults files ``idf.py`` would start from."""
    if (project / "sdkconfig").exists():
        return [project / "sdkconfig"]
    defaults_file = project / "sdkconfig.defaults"
    files = [defaults_file] if defaults_file.exists() else []
    target = read_config(files, project).string("CONFIG_IDF_TARGET") or DEFAULT_TARGET
    per_target = project / f"sdkconfig.defaults.{target}"
    return files + ([per_target] if per_target.exists() else [])


def _number(config: Config, name: str) -> tuple[int, str] | None:
    found = config.get(name)
    if found is None:
        return None
    try:
        return partition_table.parse_number(found[0].strip('"')), found[1]
    except ValueError:
        raise InputFileError(f"{found[1]}: {name} {found[0]!r} is not a number") from None


def _flash_size(config: Config, build: build_answer.FlasherArgs | None) -> tuple[int, Evidence]:
    named = config.get("CONFIG_ESPTOOLPY_FLASHSIZE")
    chosen = [k for k, v in config.values.items() if re.fullmatch(r"CONFIG_ESPTOOLPY_FLASHSIZE_\w+", k) and v[0] == "y"]
    if build is not None and build.flash_settings.get("flash_size", "keep") != "keep":
        text, where = build.flash_settings["flash_size"], str(build_answer.FLASHER_ARGS)
    elif named:
        text, where = named[0].strip('"'), named[1]
    elif chosen:
        text, where = chosen[-1].rsplit("_", 1)[1], config.values[chosen[-1]][1]
    else:
        text, where = "2MB", defaults.SOURCES["flash size"]
    megabytes = re.fullmatch(r"(\d{1,4})MB", text)
    if not megabytes or int(megabytes[1]) not in FLASH_SIZES_MB:
        raise InputFileError(f"{where}: flash size {text[:40]!r} is not one of ESP-IDF's 1MB, 2MB, 4MB ... 128MB")
    return int(megabytes[1]) * 1024 * 1024, Evidence("flash size", text, where)


def _table(
    project: Path, config: Config, config_files: list[Path], settings: partition_types.BuildSettings
) -> tuple[partition_types.PartitionTable, Evidence]:
    """The built table when it is newer than everything it is made from, else the CSV sdkconfig names."""
    csv_path = None
    if config.enabled("CONFIG_PARTITION_TABLE_CUSTOM"):
        csv_path = project / (config.string("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME") or "partitions.csv")
    built = project / BUILT_TABLE
    sources = [p for p in [csv_path, *config_files] if p is not None and p.is_file()]
    if built.is_file() and all(built.stat().st_mtime >= p.stat().st_mtime for p in sources):
        table = partition_table.load(built, settings.table_offset, settings)
        return table, Evidence("partition table", str(BUILT_TABLE), "the build (newer than its sources)")
    if csv_path is not None:
        name = str(csv_path.relative_to(project))
        if not csv_path.is_file():
            raise InputFileError(f"{project}: sdkconfig names the partition table {name!r}, which does not exist")
        table = partition_table.load(csv_path, settings.table_offset, settings)
        where = (config.get("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME") or ("", "default"))[1]
        return table, Evidence("partition table", name, where)
    choice = next((c for c in defaults.TABLE_CHOICES if config.enabled(f"CONFIG_PARTITION_TABLE_{c}")), None)
    where = config.values[f"CONFIG_PARTITION_TABLE_{choice}"][1] if choice else defaults.SOURCES["partition table"]
    file_name, text = defaults.builtin_table(
        choice or "SINGLE_APP", config.enabled("CONFIG_ESP_COREDUMP_ENABLE_TO_FLASH")
    )
    table = partition_table.parse_csv(text, f"ESP-IDF built-in table {file_name}", settings=settings)
    return table, Evidence("partition table", f"ESP-IDF built-in {file_name}", where)


def _secure_boot(config: Config, target: str) -> tuple[partition_types.SecureBoot, Evidence]:
    for version in ("v2", "v1"):
        if found := config.get(f"CONFIG_SECURE_BOOT_{version.upper()}_ENABLED"):
            if found[0] == "y":
                return version, Evidence("secure boot", version, found[1])
    if not config.enabled("CONFIG_SECURE_BOOT"):
        return None, Evidence("secure boot", "off", (config.get("CONFIG_SECURE_BOOT") or ("", "default off"))[1])
    revision = _number(config, "CONFIG_ESP32_REV_MIN_FULL")
    version, where = defaults.secure_boot_version(target, revision[0] if revision else 0)
    return version, Evidence("secure boot", version, where)  # type: ignore[return-value]


def _nvs_security(
    config: Config, target: str, flash_encryption: bool, idf_major: int | None
) -> tuple[NvsSecurity, list[Evidence]]:
    found = config.get("CONFIG_NVS_ENCRYPTION")
    possible = flash_encryption or target in defaults.HMAC_CHIPS
    if found is not None:
        encryption, where = found[0] == "y" and possible, found[1]
        if found[0] == "y" and not possible:
            where += f" (ignored by Kconfig: needs flash encryption or HMAC, which {target} lacks)"
    else:
        encryption, where = flash_encryption, defaults.SOURCES["nvs encryption"]
    evidence = [Evidence("nvs encryption", "on" if encryption else "off", where)]
    if not encryption:
        return NvsSecurity(False, None, None), evidence
    chosen = {
        "hmac": config.get("CONFIG_NVS_SEC_KEY_PROTECT_USING_HMAC"),
        "flash_enc": config.get("CONFIG_NVS_SEC_KEY_PROTECT_USING_FLASH_ENC"),
        "none": config.get("CONFIG_NVS_SEC_KEY_PROTECT_NONE"),
    }
    scheme = next((name for name, value in chosen.items() if value is not None and value[0] == "y"), None)
    if scheme is not None:
        where = (chosen[scheme] or ("", ""))[1]
    else:
        scheme, where = defaults.nvs_key_scheme(target, flash_encryption, idf_major)
    evidence.append(Evidence("nvs key scheme", scheme, where))
    key_id = None
    if scheme == "hmac":
        found_id = _number(config, "CONFIG_NVS_SEC_HMAC_EFUSE_KEY_ID")
        key_id = found_id[0] if found_id else -1
        if not -1 <= key_id <= 5:
            raise InputFileError(f"{found_id[1] if found_id else ''}: NVS_SEC_HMAC_EFUSE_KEY_ID {key_id} is not -1..5")
        evidence.append(
            Evidence("nvs hmac key id", str(key_id), found_id[1] if found_id else defaults.SOURCES["nvs hmac key id"])
        )
    return NvsSecurity(True, scheme, key_id), evidence


def load_project(directory: str | Path, *, table_offset: int | None = None) -> ProjectProfile:
    """Read an ESP-IDF project directory; raises :class:`InputFileError` naming what is missing or wrong.

    ``table_offset`` overrides ``CONFIG_PARTITION_TABLE_OFFSET`` (an explicit ``--table-offset``).
    """
    project = Path(directory)
    if not project.is_dir():
        raise InputFileError(f"--project {project}: not a directory; give the ESP-IDF project (CMakeLists.txt)")
    if not (project / "CMakeLists.txt").is_file():
        raise InputFileError(f"--project {project}: no CMakeLists.txt; give the ESP-IDF project's top directory")
    files = _config_files(project)
    if not files:
        raise InputFileError(f"--project {project}: no sdkconfig or sdkconfig.defaults; run `idf.py menuconfig` once")
    config = build_answer.resolved_config(project, files) or read_config(files, project)
    flasher = build_answer.flasher_args(project, files)
    sources = ProjectSources(project)
    evidence: list[Evidence] = []

    target = config.string("CONFIG_IDF_TARGET") or DEFAULT_TARGET
    evidence.append(
        Evidence("target", target, (config.get("CONFIG_IDF_TARGET") or ("", defaults.SOURCES["target"]))[1])
    )
    flash_size, found = _flash_size(config, flasher)
    evidence.append(found)
    where = "--table-offset"
    if table_offset is None:
        built_offset = flasher.offset_of("partition-table") if flasher else None
        configured = _number(config, "CONFIG_PARTITION_TABLE_OFFSET")
        if built_offset is not None:
            table_offset, where = built_offset, str(build_answer.FLASHER_ARGS)
        elif configured is not None:
            table_offset, where = configured
        else:
            table_offset, where = partition_types.DEFAULT_TABLE_OFFSET, defaults.SOURCES["table offset"]
    if table_offset % 0x1000 or not 0x1000 <= table_offset < flash_size:
        raise InputFileError(f"{where}: partition table offset 0x{table_offset:x} is not a 0x1000-aligned flash offset")
    evidence.append(Evidence("table offset", f"0x{table_offset:x}", where))
    secure_boot, found = _secure_boot(config, target)
    evidence.append(found)
    bootloader = _number(config, "CONFIG_BOOTLOADER_OFFSET_IN_FLASH")
    settings = partition_types.BuildSettings(
        table_offset=table_offset,
        bootloader_offset=bootloader[0] if bootloader else defaults.bootloader_offset(target),
        flash_size=flash_size,
        secure_boot=secure_boot,
    )
    table, table_evidence = _table(project, config, files, settings)
    evidence.append(table_evidence)
    rules, found_family = families.detect(sources)
    block_size, bitmap, protocols, found_limits = (
        ota_limits.read_modular(sources) if rules and rules.agent == "modular" else ota_limits.read_v3(config, sources)
    )
    evidence += found_limits
    evidence.append(found_family)
    flash_encryption = config.enabled("CONFIG_SECURE_FLASH_ENC_ENABLED")
    idf_major, idf_where = build_answer.idf_version(project)
    nvs_security, found_nvs = _nvs_security(config, target, flash_encryption, idf_major)
    evidence += found_nvs
    if nvs_security.scheme == "hmac" and idf_major is None:
        evidence.append(Evidence("esp-idf version", "6 (assumed)", idf_where))
    if flasher is not None:
        evidence += [
            Evidence("flash file", f"{off} {name}", str(build_answer.FLASHER_ARGS))
            for off, name in flasher.flash_files.items()
        ]
    secure_cert = next(
        (p for p in table.partitions if p.name == SECURE_CERT_LABEL and p.type == SECURE_CERT_TYPE), None
    )
    if secure_cert is not None:
        evidence.append(Evidence("esp_secure_cert", f"0x{secure_cert.offset:x}", table_evidence.value))
    return ProjectProfile(
        directory=project,
        target=target,
        flash_size=flash_size,
        table=table,
        table_source=table_evidence.value,
        secure_boot=secure_boot,
        flash_encryption=flash_encryption,
        nvs_encryption=nvs_security.encryption,
        rollback=config.enabled("CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE"),
        block_size=block_size,
        bitmap_bytes=bitmap,
        protocols=protocols,
        family=rules.name if rules else None,
        evidence=tuple(evidence),
        nvs_security=nvs_security,
        build=flasher,
        secure_cert_ds=config.enabled("CONFIG_ESP_SECURE_CERT_DS_PERIPHERAL"),
    )

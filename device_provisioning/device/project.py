"""The device, as its ESP-IDF firmware project defines it: read from the project directory, not assumed.

A project says where everything is: ``sdkconfig`` (or, before the first build, ``sdkconfig.defaults``
and ``sdkconfig.defaults.<target>``) names the partition table and where the build puts it
(``CONFIG_PARTITION_TABLE_OFFSET``), the flash size, the chip, secure boot and encryption; the OTA
agent's limits come from Kconfig (esp-aws-iot master: ``CONFIG_LOG2_FILE_BLOCK_SIZE``,
``CONFIG_OTA_DATA_OVER_MQTT``/``_HTTP``) or from the demo's own ``ota_config.h`` (release/beta:
``otaconfigLOG2_FILE_BLOCK_SIZE``, ``configENABLED_DATA_PROTOCOLS``), with the OTA library's defaults
when neither says; and the sources tell how the firmware gets its code-verification certificate:

- ``embedded`` (esp-aws-iot master/LTS demos): ``main/certs/aws_codesign.crt`` compiled into the app
  (``target_add_binary_data(... TEXT)``) and passed to ``otaPal_SetCodeSigningCertificate()``; NVS is
  never read for it;
- ``beta`` (release/beta demos): the PKCS#11 PAL reads ``storage``/``creds``/``P11_CSK`` as a string,
  falling back to ``otapalconfigCODE_SIGNING_CERTIFICATE`` from ``ota_config.h``;
- ``pkcs11``: firmware that stores ``P11_CSK`` as a blob (its NVS input CSV says so).

Every derived value keeps the evidence it came from (file and line, or "default"), so ``project show``
can say why it believes what it prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_provisioning.device import esp_build, ota_limits, partition_table
from device_provisioning.errors import InputFileError

BUILT_TABLE = Path("build") / "partition_table" / "partition-table.bin"
EMBEDDED_CERTIFICATE = Path("main") / "certs" / "aws_codesign.crt"
FAMILIES = ("beta", "pkcs11", "embedded")
DEFAULT_TARGET = "esp32"
DEFAULT_FLASH_SIZE = "2MB"  # ESP-IDF's Kconfig default for CONFIG_ESPTOOLPY_FLASHSIZE

# ESP-IDF's own tables (components/partition_table), chosen by CONFIG_PARTITION_TABLE_<TYPE>: the ones an
# OTA project can start from are listed; the others (coredump, encrypted NVS) must be copied into the project.
BUILTIN_TABLES = {
    "SINGLE_APP": "nvs,data,nvs,0x9000,0x6000\nphy_init,data,phy,0xf000,0x1000\nfactory,app,factory,0x10000,1M\n",
    "SINGLE_APP_LARGE": "nvs,data,nvs,0x9000,0x6000\nphy_init,data,phy,0xf000,0x1000\n"
    "factory,app,factory,0x10000,1500K\n",
    "TWO_OTA": "nvs,data,nvs,0x9000,0x4000\notadata,data,ota,0xd000,0x2000\nphy_init,data,phy,0xf000,0x1000\n"
    "factory,app,factory,0x10000,1M\nota_0,app,ota_0,,1M\nota_1,app,ota_1,,1M\n",
}
# Where the second-stage bootloader sits when sdkconfig does not say (ESP-IDF's per-target default).
BOOTLOADER_OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32p4": 0x2000, "esp32c5": 0x2000}

_SETTING = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^#\s*(CONFIG_[A-Za-z0-9_]+) is not set")
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*(?:/[/*].*)?$")


@dataclass(frozen=True)
class Evidence:
    """Where a derived value came from: ``sdkconfig:14``, ``main/ota_config.h:52``, or a default."""

    setting: str
    value: str
    source: str

    def to_json(self) -> dict[str, str]:
        return {"setting": self.setting, "value": self.value, "source": self.source}


@dataclass(frozen=True)
class _Config:
    """sdkconfig settings with the file and line each came from (later files override earlier ones)."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str, str] | None:
        return self.values.get(name)

    def enabled(self, name: str) -> bool:
        found = self.values.get(name)
        return found is not None and found[0] == "y"

    def string(self, name: str) -> str | None:
        found = self.values.get(name)
        return None if found is None else found[0].strip('"')


@dataclass(frozen=True)
class ProjectProfile:
    """What the firmware project says about its devices; explicit command-line options override it."""

    directory: Path
    target: str
    flash_size: int
    table: partition_table.PartitionTable
    table_source: str
    secure_boot: partition_table.SecureBoot
    flash_encryption: bool
    nvs_encryption: bool
    rollback: bool
    block_size: int
    bitmap_bytes: int
    protocols: tuple[str, ...]
    family: str | None
    evidence: tuple[Evidence, ...]

    @property
    def table_offset(self) -> int:
        return self.table.table_offset

    @property
    def build_dir(self) -> Path:
        return self.directory / "build"

    def built_app(self) -> Path | None:
        """The app image of the project's last build (``build/flasher_args.json``), if it was built."""
        if not (self.build_dir / esp_build.FLASHER_ARGS).is_file():
            return None
        app = esp_build.load_build(self.build_dir).file("app")
        return None if app is None else app.path

    def limits(self) -> ota_limits.DeviceLimits:
        """The OTA agent limits and app slot size an update must fit."""
        slots = [p.size for p in self.table.partitions if p.type == partition_table.APP and 0x10 <= p.subtype <= 0x1F]
        return ota_limits.DeviceLimits(self.block_size, self.bitmap_bytes, self.protocols, min(slots, default=None))

    def to_json(self) -> dict[str, Any]:
        limits = self.limits()
        storage = next((p for p in self.table.partitions if p.name == "storage"), None)
        return {
            "project": str(self.directory),
            "target": self.target,
            "flash_size": self.flash_size,
            "partition_table": {
                "source": self.table_source,
                "table_offset": f"0x{self.table_offset:x}",
                "storage_offset": None if storage is None else f"0x{storage.offset:x}",
            },
            "secure_boot": self.secure_boot,
            "flash_encryption": self.flash_encryption,
            "nvs_encryption": self.nvs_encryption,
            "ota": {
                "block_size": self.block_size,
                "bitmap_bytes": self.bitmap_bytes,
                "max_image_size": limits.max_image_size,
                "app_partition_size": limits.app_partition_size,
                "protocols": list(self.protocols),
                "rollback": self.rollback,
            },
            "family": self.family,
            "evidence": [item.to_json() for item in self.evidence],
        }


def _read_config(files: Iterable[Path], project: Path) -> _Config:
    values: dict[str, tuple[str, str]] = {}
    for path in files:
        for number, line in enumerate(_text(path).splitlines(), 1):
            where = f"{path.relative_to(project)}:{number}"
            if match := _SETTING.match(line.strip()):
                values[match[1]] = (match[2].strip(), where)
            elif match := _UNSET.match(line.strip()):
                values[match[1]] = ("n", where)
    return _Config(values)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InputFileError(f"{path}: cannot be read ({error.strerror})") from None


def _config_files(project: Path) -> list[Path]:
    """``sdkconfig`` when the project was configured, else the defaults files ``idf.py`` would start from."""
    if (project / "sdkconfig").is_file():
        return [project / "sdkconfig"]
    defaults = [project / "sdkconfig.defaults"] if (project / "sdkconfig.defaults").is_file() else []
    target = _read_config(defaults, project).string("CONFIG_IDF_TARGET") or DEFAULT_TARGET
    per_target = project / f"sdkconfig.defaults.{target}"
    return defaults + ([per_target] if per_target.is_file() else [])


def _defines(project: Path) -> dict[str, tuple[str, str]]:
    """``#define NAME value`` in the firmware's own sources (``main/``), with file and line."""
    found: dict[str, tuple[str, str]] = {}
    main = project / "main"
    for path in sorted(main.rglob("*.[ch]")) if main.is_dir() else []:
        for number, line in enumerate(_text(path).splitlines(), 1):
            if match := _DEFINE.match(line):
                found.setdefault(match[1], (match[2], f"{path.relative_to(project)}:{number}"))
    return found


def _first_line_with(project: Path, patterns: Iterable[str], needle: str) -> str | None:
    for pattern in patterns:
        for path in sorted(project.glob(pattern)):
            if not path.is_file():
                continue
            for number, line in enumerate(_text(path).splitlines(), 1):
                if needle in line and not line.lstrip().startswith(("#", "//", "*")):
                    return f"{path.relative_to(project)}:{number}"
    return None


def _c_number(text: str) -> int | None:
    match = re.fullmatch(r"\(?\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)?", text.strip())
    return None if match is None else int(match[1], 0)


def _flash_size(config: _Config) -> tuple[int, Evidence]:
    named = config.get("CONFIG_ESPTOOLPY_FLASHSIZE")
    if named:
        text, where = named[0].strip('"'), named[1]
    else:
        chosen = [(k, v) for k, v in config.values.items() if re.fullmatch(r"CONFIG_ESPTOOLPY_FLASHSIZE_\d+MB", k)]
        chosen = [(k, v) for k, v in chosen if v[0] == "y"]
        if chosen:
            text, where = chosen[-1][0].rsplit("_", 1)[1], chosen[-1][1][1]
        else:
            text, where = DEFAULT_FLASH_SIZE, "default (ESP-IDF Kconfig)"
    megabytes = re.fullmatch(r"(\d+)MB", text)
    if not megabytes:
        raise InputFileError(f"{where}: flash size {text!r} is not like 4MB")
    return int(megabytes[1]) * 1024 * 1024, Evidence("flash size", text, where)


def _table(
    project: Path, config: _Config, config_files: list[Path], settings: partition_table.BuildSettings
) -> tuple[Any, Evidence]:
    """The built table when it is newer than everything it is made from, else the CSV sdkconfig names."""
    csv_name = "partitions.csv"
    if config.enabled("CONFIG_PARTITION_TABLE_CUSTOM"):
        named = config.get("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME")
        csv_name = named[0].strip('"') if named else csv_name
        csv_path: Path | None = project / csv_name
    else:
        csv_path = None
    built = project / BUILT_TABLE
    sources = [p for p in [csv_path, *config_files] if p is not None and p.is_file()]
    if built.is_file() and all(built.stat().st_mtime >= p.stat().st_mtime for p in sources):
        table = partition_table.load(built, settings.table_offset, settings)
        return table, Evidence("partition table", str(BUILT_TABLE), "the build (newer than its sources)")
    if csv_path is not None:
        if not csv_path.is_file():
            raise InputFileError(
                f"{project}: sdkconfig names the partition table {csv_name!r}, which does not exist in the project"
            )
        table = partition_table.load(csv_path, settings.table_offset, settings)
        where = (config.get("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME") or ("", "default"))[1]
        return table, Evidence("partition table", csv_name, where)
    kind = next(
        (
            name
            for name in ("SINGLE_APP_LARGE", "TWO_OTA", "SINGLE_APP")
            if config.enabled(f"CONFIG_PARTITION_TABLE_{name}")
        ),
        None,
    )
    if kind is None and any(k.startswith("CONFIG_PARTITION_TABLE_") and v[0] == "y" for k, v in config.values.items()):
        raise InputFileError(
            f"{project}: the project uses one of ESP-IDF's built-in partition tables this tool does not carry; "
            "copy it into the project and set CONFIG_PARTITION_TABLE_CUSTOM"
        )
    kind = kind or "SINGLE_APP"
    table = partition_table.parse_csv(BUILTIN_TABLES[kind], f"ESP-IDF built-in table {kind.lower()}", settings=settings)
    return table, Evidence("partition table", f"ESP-IDF built-in {kind.lower()}", "sdkconfig (or its default)")


def _protocols(config: _Config, defines: dict[str, tuple[str, str]]) -> tuple[tuple[str, ...], Evidence]:
    kconfig = [config.get("CONFIG_OTA_DATA_OVER_MQTT"), config.get("CONFIG_OTA_DATA_OVER_HTTP")]
    if any(kconfig):
        # Kconfig defaults: MQTT on, HTTP off (esp-aws-iot's libraries/ota-for-aws-iot-embedded-sdk/Kconfig).
        mqtt = config.get("CONFIG_OTA_DATA_OVER_MQTT") is None or config.enabled("CONFIG_OTA_DATA_OVER_MQTT")
        http = config.enabled("CONFIG_OTA_DATA_OVER_HTTP")
        protocols = tuple(name for name, on in (("mqtt", mqtt), ("http", http)) if on)
        where = ", ".join(found[1] for found in kconfig if found)
        return protocols, Evidence("data protocols", ",".join(protocols), where)
    if "configENABLED_DATA_PROTOCOLS" in defines:
        text, where = defines["configENABLED_DATA_PROTOCOLS"]
        protocols = tuple(name for name in ("mqtt", "http") if f"OTA_DATA_OVER_{name.upper()}" in text)
        return protocols, Evidence("data protocols", ",".join(protocols), where)
    return ("mqtt",), Evidence("data protocols", "mqtt", "default (OTA library: data over MQTT)")


def _block_size(config: _Config, defines: dict[str, tuple[str, str]]) -> tuple[int, Evidence]:
    found = config.get("CONFIG_LOG2_FILE_BLOCK_SIZE")
    if found is None and "otaconfigLOG2_FILE_BLOCK_SIZE" in defines:
        found = defines["otaconfigLOG2_FILE_BLOCK_SIZE"]
    if found is None:
        default = "default (CONFIG_LOG2_FILE_BLOCK_SIZE / otaconfigLOG2_FILE_BLOCK_SIZE 12)"
        return ota_limits.DEFAULT_BLOCK_SIZE, Evidence("block size", "4096 (2^12)", default)
    log2 = _c_number(found[0])
    if log2 is None or not 8 <= log2 <= 16:
        raise InputFileError(f"{found[1]}: otaconfigLOG2_FILE_BLOCK_SIZE {found[0]!r} is not a number from 8 to 16")
    return 1 << log2, Evidence("block size", f"{1 << log2} (2^{log2})", found[1])


def _bitmap_bytes(defines: dict[str, tuple[str, str]]) -> tuple[int, Evidence]:
    if "OTA_MAX_BLOCK_BITMAP_SIZE" in defines:
        text, where = defines["OTA_MAX_BLOCK_BITMAP_SIZE"]
        value = _c_number(text)
        if value is None or value < 1:
            raise InputFileError(f"{where}: OTA_MAX_BLOCK_BITMAP_SIZE {text!r} is not a positive number")
        return value, Evidence("block bitmap", f"{value} bytes", where)
    default = ota_limits.DEFAULT_BITMAP_BYTES
    return default, Evidence("block bitmap", f"{default} bytes", "default (OTA library ota_private.h)")


def _family(project: Path, defines: dict[str, tuple[str, str]]) -> tuple[str | None, Evidence]:
    compiled_in = _first_line_with(project, ["main/*.c"], "otaPal_SetCodeSigningCertificate")
    embedded = _first_line_with(project, ["CMakeLists.txt", "main/CMakeLists.txt"], "aws_codesign.crt")
    if compiled_in or embedded:
        where = compiled_in or embedded or ""
        return "embedded", Evidence("family", "embedded (certificate compiled into the app)", where)
    for csv_path in sorted(project.glob("*.csv")):
        for number, line in enumerate(_text(csv_path).splitlines(), 1):
            fields = [item.strip() for item in line.split(",")]
            if fields[:2] == ["P11_CSK", "file"] and len(fields) >= 3:
                where = f"{csv_path.relative_to(project)}:{number}"
                if fields[2] == "string":
                    return "beta", Evidence("family", "beta (P11_CSK read as an NVS string)", where)
                return "pkcs11", Evidence("family", "pkcs11 (P11_CSK read as an NVS blob)", where)
    if "otapalconfigCODE_SIGNING_CERTIFICATE" in defines:
        where = defines["otapalconfigCODE_SIGNING_CERTIFICATE"][1]
        return "beta", Evidence("family", "beta (PKCS#11 PAL with the ota_config.h fallback certificate)", where)
    return None, Evidence("family", "unknown", "no evidence in main/, CMakeLists.txt or the NVS input CSVs")


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
    config = _read_config(files, project)
    defines = _defines(project)
    evidence: list[Evidence] = []

    target = config.string("CONFIG_IDF_TARGET") or DEFAULT_TARGET
    target_where = (config.get("CONFIG_IDF_TARGET") or ("", "default (ESP-IDF)"))[1]
    evidence.append(Evidence("target", target, target_where))
    flash_size, found = _flash_size(config)
    evidence.append(found)

    offset_setting = config.get("CONFIG_PARTITION_TABLE_OFFSET")
    where = offset_setting[1] if offset_setting else "default (ESP-IDF Kconfig)"
    if table_offset is not None:
        where = "--table-offset"
    elif offset_setting:
        try:
            table_offset = partition_table.parse_number(offset_setting[0])
        except ValueError:
            raise InputFileError(
                f"{where}: CONFIG_PARTITION_TABLE_OFFSET {offset_setting[0]!r} is not a number"
            ) from None
    else:
        table_offset = partition_table.DEFAULT_TABLE_OFFSET
    evidence.append(Evidence("table offset", f"0x{table_offset:x}", where))
    secure_boot: partition_table.SecureBoot = None
    if config.enabled("CONFIG_SECURE_BOOT_V2_ENABLED"):
        secure_boot = "v2"
    elif config.enabled("CONFIG_SECURE_BOOT_V1_ENABLED"):
        secure_boot = "v1"
    bootloader = config.get("CONFIG_BOOTLOADER_OFFSET_IN_FLASH")
    settings = partition_table.BuildSettings(
        table_offset=table_offset,
        bootloader_offset=int(bootloader[0], 0) if bootloader else BOOTLOADER_OFFSETS.get(target, 0),
        flash_size=flash_size,
        secure_boot=secure_boot,
    )
    table, table_evidence = _table(project, config, files, settings)
    evidence.append(table_evidence)
    block_size, found = _block_size(config, defines)
    evidence.append(found)
    bitmap, found = _bitmap_bytes(defines)
    evidence.append(found)
    protocols, found = _protocols(config, defines)
    evidence.append(found)
    family, found = _family(project, defines)
    evidence.append(found)
    return ProjectProfile(
        directory=project,
        target=target,
        flash_size=flash_size,
        table=table,
        table_source=table_evidence.value,
        secure_boot=secure_boot,
        flash_encryption=config.enabled("CONFIG_SECURE_FLASH_ENC_ENABLED"),
        nvs_encryption=config.enabled("CONFIG_NVS_ENCRYPTION"),
        rollback=config.enabled("CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE"),
        block_size=block_size,
        bitmap_bytes=bitmap,
        protocols=protocols,
        family=family,
        evidence=tuple(evidence),
    )

"""Typed views of the option groups commands share (argparse parents in :mod:`.common`).

Each command's view (in its module, next to its handler) is a frozen dataclass that inherits the views of the
groups it takes and adds its own options, so mypy checks every option a handler or a reader reads, and no
handler can change what was given. tests/test_cli_options.py checks each view's fields are exactly its parser's
options. Nothing here imports the library: a value read from the options (the ``--project`` profile) is loaded
when first asked for, and kept on the view.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_provisioning.cli import choices
from device_provisioning.cli.parsing import Options

if TYPE_CHECKING:
    from device_provisioning.device.project import ProjectProfile


@dataclass(frozen=True, kw_only=True)
class AwsOptions(Options):
    """``--profile``, ``--region``, ``--endpoint-url``."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class StageOptions(Options):
    stage: str = "dev"


@dataclass(frozen=True, kw_only=True)
class PassphraseOptions(Options):
    passphrase_env: str | None = None


@dataclass(frozen=True, kw_only=True)
class NvsKeysOptions(Options):
    nvs_keys: Path | None = None


@dataclass(frozen=True, kw_only=True)
class ForceOptions(Options):
    force: bool = False


@dataclass(frozen=True, kw_only=True)
class NoStubOptions(Options):
    no_stub: bool = False


@dataclass(frozen=True, kw_only=True)
class ExpectFingerprintOptions(Options):
    expect_fingerprint: str | None = None


@dataclass(frozen=True, kw_only=True)
class ProjectOptions(Options):
    """``--project``: the firmware project the other options default from."""

    project: Path | None = None

    @property
    def project_table_offset(self) -> int | None:
        """The ``--table-offset`` the project's CSV table is placed at, on commands that take one."""
        return None

    @functools.cached_property
    def project_profile(self) -> ProjectProfile | None:
        """The ``--project`` profile, read once per command; ``None`` without ``--project``."""
        if self.project is None:
            return None
        from device_provisioning.device import project

        return project.load_project(self.project, table_offset=self.project_table_offset)


@dataclass(frozen=True, kw_only=True)
class TableOffsetOptions(ProjectOptions):
    table_offset: int | None = None

    @property
    def project_table_offset(self) -> int | None:
        return self.table_offset


@dataclass(frozen=True, kw_only=True)
class PartitionTableOptions(TableOffsetOptions):
    partition_table: Path | None = None
    partition: str = choices.DEFAULT_PARTITION


@dataclass(frozen=True, kw_only=True)
class FamilyOptions(ProjectOptions):
    family: str | None = None


@dataclass(frozen=True, kw_only=True)
class LimitsOptions(ProjectOptions):
    """The OTA agent's limits (``--ota-block-size`` ...), each defaulting to the project's."""

    ota_block_size: int | None = None
    ota_bitmap_bytes: int | None = None
    device_protocols: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ImageVersionOptions(ProjectOptions):
    app_version: str | None = None


@dataclass(frozen=True, kw_only=True)
class RuleOverrideOptions(Options):
    """One option per update-compatibility rule that may be overridden (choices.RULE_OVERRIDES)."""

    allow_same_version: bool = False
    allow_downgrade: bool = False
    allow_without_rollback: bool = False

    def overridden(self) -> frozenset[str]:
        given = {
            "--allow-same-version": self.allow_same_version,
            "--allow-downgrade": self.allow_downgrade,
            "--allow-without-rollback": self.allow_without_rollback,
        }
        return frozenset(rule for rule, option in choices.RULE_OVERRIDES.items() if given[option])


@dataclass(frozen=True, kw_only=True)
class HeldKeyOptions(AwsOptions):
    """A signing key this tool never reads: ``--kms-key`` or ``--pkcs11-uri`` (``--pkcs11-module``)."""

    kms_key: str | None = None
    pkcs11_uri: str | None = None
    pkcs11_module: Path | None = None


@dataclass(frozen=True, kw_only=True)
class GeneratingKeyOptions(HeldKeyOptions):
    generate: bool = False


@dataclass(frozen=True, kw_only=True)
class CertificateSourceOptions(FamilyOptions, NvsKeysOptions):
    """Where the devices' certificate is read from: ``--nvs`` (with ``--family``), ``--embedded-in``."""

    nvs: Path | None = None
    embedded_in: Path | None = None

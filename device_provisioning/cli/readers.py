"""Readers of the options commands share: the --project profile, tables, families, keys, AWS and firmware.

Each imports the library modules it needs when called, so that building the command line loads none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from device_provisioning.errors import InputFileError

if TYPE_CHECKING:
    from device_provisioning import aws, signing
    from device_provisioning.cli.options import (
        AwsOptions,
        CertificateSourceOptions,
        FamilyOptions,
        ForceOptions,
        GeneratingKeyOptions,
        HeldKeyOptions,
        LimitsOptions,
        NvsKeysOptions,
        PassphraseOptions,
        ProjectOptions,
        TableOffsetOptions,
    )
    from device_provisioning.device import ota_limits, partition_types, project
    from device_provisioning.identity.signers import CodeSigner


def firmware_project(args: ProjectOptions) -> project.ProjectProfile | None:
    """The ``--project`` profile (read once per command), or ``None`` without ``--project``."""
    return args.project_profile


def device_limits(args: LimitsOptions) -> ota_limits.DeviceLimits:
    """The OTA agent's limits from the options, else from the project, else the OTA library's defaults."""
    from device_provisioning.device import ota_limits

    derived = firmware_project(args)
    base = derived.limits() if derived else ota_limits.DeviceLimits()
    return ota_limits.DeviceLimits(
        args.ota_block_size or base.block_size,
        args.ota_bitmap_bytes or base.bitmap_bytes,
        args.device_protocols or base.protocols,
        base.app_partition_size,
        agent=base.agent,
    )


def load_table(args: TableOffsetOptions, path: Path | None) -> partition_types.PartitionTable:
    """The partition table at ``path`` (else the project's), placed as the project's build places it."""
    from device_provisioning.device import partition_table, partition_types

    derived = firmware_project(args)
    if path is None:
        if derived is None:
            raise InputFileError("give --partition-table CSV|BIN or --project DIR (the firmware project)")
        return derived.table
    offset = args.table_offset
    if offset is None:
        offset = derived.table_offset if derived else partition_types.DEFAULT_TABLE_OFFSET
    return partition_table.load(path, offset)


def _checked_family(name: str) -> str:
    """``--family`` must name a registered family (device/family.py): checked here, not by argparse choices."""
    from device_provisioning.device import family as families

    return families.get(name).name


def trust_family(args: FamilyOptions) -> str | None:
    """The firmware family for the pre-flight: ``--family``, else the project's (``embedded`` included)."""
    if args.family:
        return _checked_family(args.family)
    derived = firmware_project(args)
    return derived.family if derived else None


def nvs_family(args: FamilyOptions) -> str:
    """How the firmware reads P11_CSK from NVS: ``--family``, else the project's; refuses firmware that never does."""
    if args.family:
        from device_provisioning.device.credentials import check_family

        return check_family(_checked_family(args.family))
    derived = firmware_project(args)
    if derived is None:
        raise InputFileError("give --family beta|pkcs11 (how the firmware reads the certificate) or --project DIR")
    if derived.rules is not None and not derived.rules.reads_nvs_certificate:
        where = next(e.source for e in derived.evidence if e.setting == "family")
        raise InputFileError(
            f"{derived.directory}: this firmware verifies updates with the certificate compiled into the app "
            f"({where}) and never reads P11_CSK from NVS; install it with `codesign install-embedded --project "
            f"{derived.directory}` and check the built app (`verify --embedded-in`), or pass --family to override"
        )
    if derived.family is None:
        raise InputFileError(
            f"{derived.directory}: the firmware family could not be told from the project; pass --family beta|pkcs11"
        )
    return derived.family


def refuse_existing_outputs(args: ForceOptions, *outputs: Path) -> None:
    """An existing output is replaced only with ``--force`` (it may be the only copy of an image or signature)."""
    from device_provisioning.files import refuse_existing

    if not args.force:
        refuse_existing(*outputs, hint="pass --force to replace, or choose another --out")


def passphrase(args: PassphraseOptions) -> bytes | None:
    """Passphrases come from an environment variable, never from argv (visible in `ps`)."""
    variable = args.passphrase_env
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise InputFileError(f"--passphrase-env {variable}: the variable is not set or empty")
    return value.encode()


def nvs_encryption_key(args: NvsKeysOptions) -> bytes | None:
    """The NVS encryption key from ``--nvs-keys`` (an nvs_keys partition image), if given."""
    from device_provisioning.device import nvs_keys
    from device_provisioning.files import read_bytes

    path = args.nvs_keys
    if path is None:
        return None
    return nvs_keys.key_from_keys_partition(read_bytes(path, "NVS keys"))


def connect_aws(args: AwsOptions) -> aws.Aws:
    """A session from the command's ``--profile``/``--region``/``--endpoint-url``."""
    from device_provisioning import aws

    return aws.connect(profile=args.profile, region=args.region, endpoint_url=args.endpoint_url)


def held_key_signer(args: HeldKeyOptions) -> CodeSigner | None:
    """The signer of a key this tool never reads: ``--kms-key`` (AWS KMS) or ``--pkcs11-uri`` (a token)."""
    if args.kms_key and args.pkcs11_uri:
        raise InputFileError("give --kms-key or --pkcs11-uri, not both")
    if args.pkcs11_module and not args.pkcs11_uri:
        raise InputFileError("--pkcs11-module goes with --pkcs11-uri (the key in that module's token)")
    return open_held_key(args, args.kms_key, args.pkcs11_uri, args.pkcs11_module)


def generating_signer(args: GeneratingKeyOptions) -> CodeSigner | None:
    """:func:`held_key_signer`, for the commands whose ``--generate`` creates the key in the token first."""
    if not args.generate:
        return held_key_signer(args)
    if not args.pkcs11_uri:
        raise InputFileError("--generate creates the key in a token: give --pkcs11-uri")
    if args.kms_key:
        raise InputFileError("give --kms-key or --pkcs11-uri, not both")
    return open_held_key(args, None, args.pkcs11_uri, args.pkcs11_module, generate=True)


def open_held_key(
    args: AwsOptions, kms_key: str | None, uri: str | None, module: Path | None, *, generate: bool = False
) -> CodeSigner | None:
    """The signer of a key in AWS KMS (``kms_key``, on the command's AWS session) or in a PKCS#11 token (``uri``);
    a token session ends with the command."""
    if kms_key:
        from device_provisioning.aws.kms import kms_signer

        return kms_signer(connect_aws(args), kms_key)
    if uri:
        from device_provisioning.identity.pkcs11_signer import open_signer

        signer = open_signer(uri, module=str(module) if module else None, generate=generate)
        args.cleanup.callback(signer.close)  # log out of the token when the command ends
        return signer
    return None


def read_firmware(path: Path) -> bytes:
    """The app image to sign, verify or ship, checked as ESP-IDF's bootloader will check it."""
    from device_provisioning.device import app_image
    from device_provisioning.files import read_bytes

    data = read_bytes(path, "firmware")
    app_image.check_app_image(data, f"firmware {path}")
    return data


def split_list(text: str | None) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")``."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def device_certificates(
    args: CertificateSourceOptions, certificate_file: Path | None
) -> list[signing.DeviceCertificate]:
    """The certificate(s) the devices verify with, from --nvs/--family, --embedded-in and a certificate file."""
    from device_provisioning import signing
    from device_provisioning.files import read_bytes
    from device_provisioning.identity import pki

    found: list[signing.DeviceCertificate] = []
    if args.nvs_keys and not args.nvs:
        raise InputFileError("--nvs-keys decrypts the --nvs image: give --nvs too, or leave --nvs-keys out")
    if args.nvs:
        family = nvs_family(args)
        image = read_bytes(args.nvs, "NVS image")
        found.append(
            signing.certificate_from_nvs(image, family, source=str(args.nvs), encryption_key=nvs_encryption_key(args))
        )
    if args.embedded_in:
        app = read_bytes(args.embedded_in, "app image")
        found += signing.certificates_embedded_in(app, source=str(args.embedded_in))
    if certificate_file:
        certificate = pki.load_certificate_file(certificate_file)
        found.append(signing.DeviceCertificate(certificate, f"certificate {certificate_file}"))
    derived = firmware_project(args)
    rules = derived.rules if derived is not None else None
    if not found and derived is not None and rules is not None and rules.certificate_home == "app" and not args.family:
        # Master/LTS firmware verifies with the certificate compiled into the running app: the project's build.
        built_app = derived.built_app()
        if built_app is None:
            raise InputFileError(
                f"{derived.directory}: no built app in build/ to read the compiled-in certificate from; run "
                "`idf.py build` or pass --embedded-in APP.bin"
            )
        found += signing.certificates_embedded_in(read_bytes(built_app, "app image"), source=str(built_app))
    return found

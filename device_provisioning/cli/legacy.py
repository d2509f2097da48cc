"""The ``device-provisioning`` command line: a thin layer over the library.

Each command checks its options and calls one library function. :func:`main` is the single place
that turns a :class:`~device_provisioning.errors.ProvisioningError` into ``ERROR <one line>`` on
stderr and an exit code; tests call ``main([...])`` directly.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from device_provisioning import __version__, aws, doctor, signing
from device_provisioning.aws import codesign as aws_codesign
from device_provisioning.aws import ota, registration
from device_provisioning.device import credentials, embedded, esp_build, nvs, partition_table
from device_provisioning.errors import InputFileError, ProvisioningError
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.flashing import esptool_device, factory_image, layout
from device_provisioning.identity import codesign

Handler = Callable[[argparse.Namespace, TextIO], int]


# --- shared helpers ------------------------------------------------------------------------------------


def _emit(out: TextIO, args: argparse.Namespace, human: Sequence[str], data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
    else:
        for line in human:
            out.write(line + "\n")


def _passphrase(args: argparse.Namespace) -> bytes | None:
    """Passphrases come from an environment variable, never from argv (visible in `ps`)."""
    variable = getattr(args, "passphrase_env", None)
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise InputFileError(f"--passphrase-env {variable}: the variable is not set or empty")
    return value.encode()


def _nvs_encryption_key(args: argparse.Namespace) -> bytes | None:
    path = getattr(args, "nvs_keys", None)
    if path is None:
        return None
    return nvs.key_from_keys_partition(read_bytes(path, "NVS keys"))


# --- codesign ------------------------------------------------------------------------------------------


def _codesign_create(args: argparse.Namespace, out: TextIO) -> int:
    files = codesign.create_identity(
        args.out,
        common_name=args.common_name,
        organization=args.organization,
        days=args.days,
        passphrase=_passphrase(args),
    )
    assert files.certificate is not None
    certificate = codesign.load_certificate_file(files.certificate)
    fp = codesign.fingerprint(certificate)
    _emit(
        out,
        args,
        [
            f"private key  {files.key} (PKCS#8, mode 0600: keep it secret, never commit it)",
            f"certificate  {files.certificate}",
            f"SHA-256      {fp}",
            "next: `device-provisioning nvs build ... --code-verify-cert "
            f"{files.certificate}` puts it where the device reads it",
        ],
        {"key": str(files.key), "certificate": str(files.certificate), "sha256_fingerprint": fp},
    )
    return 0


def _codesign_csr(args: argparse.Namespace, out: TextIO) -> int:
    files = codesign.create_signing_request(
        args.out, common_name=args.common_name, organization=args.organization, passphrase=_passphrase(args)
    )
    _emit(
        out,
        args,
        [
            f"private key  {files.key} (mode 0600)",
            f"request      {files.csr}",
            "send the request to your CA for a certificate with extendedKeyUsage=codeSigning, then run "
            f"`device-provisioning codesign import-cert --out {args.out} --cert ISSUED.crt`",
        ],
        {"key": str(files.key), "csr": str(files.csr)},
    )
    return 0


def _codesign_import_cert(args: argparse.Namespace, out: TextIO) -> int:
    files = codesign.import_issued_certificate(args.out, args.cert, passphrase=_passphrase(args))
    assert files.certificate is not None
    fp = codesign.fingerprint(codesign.load_certificate_file(files.certificate))
    _emit(
        out,
        args,
        [f"certificate  {files.certificate} (matches {files.key})", f"SHA-256      {fp}"],
        {"certificate": str(files.certificate), "sha256_fingerprint": fp},
    )
    return 0


def _codesign_show(args: argparse.Namespace, out: TextIO) -> int:
    certificate = codesign.load_certificate_file(args.cert)
    key = codesign.load_private_key_file(args.key, _passphrase(args)) if args.key else None
    summary = codesign.summarise(certificate, key=key)
    lines = [
        f"subject      {summary.subject}",
        f"issuer       {summary.issuer}",
        f"valid        {summary.not_before:%Y-%m-%d %H:%M} .. {summary.not_after:%Y-%m-%d %H:%M} UTC",
        f"SHA-256      {summary.sha256_fingerprint}",
        f"key          {summary.key_type}",
        f"EKU          {', '.join(summary.extended_key_usages) or 'none'}",
    ]
    if summary.findings:
        lines += [f"{f.level.upper():<12} {f.message}" for f in summary.findings]
    else:
        lines.append("OTA use      ok: usable with AWS Signer (AmazonFreeRTOS-Default) and the device")
    _emit(out, args, lines, summary.to_json())
    return 1 if any(f.level == "error" for f in summary.findings) else 0


def _codesign_install_embedded(args: argparse.Namespace, out: TextIO) -> int:
    certificate = codesign.load_certificate_file(args.cert)
    codesign.require_usable(codesign.check_certificate(certificate), f"certificate {args.cert}")
    installed = embedded.install_embedded(args.project, certificate)
    lines = [f"wrote        {installed.path}", f"SHA-256      {installed.fingerprint}"]
    if installed.backup:
        lines.append(f"backup       {installed.backup}")
    lines.append("rebuild the firmware (idf.py build): the certificate is compiled into the app")
    _emit(
        out,
        args,
        lines,
        {
            "path": str(installed.path),
            "backup": str(installed.backup) if installed.backup else None,
            "sha256_fingerprint": installed.fingerprint,
        },
    )
    return 0


# --- partitions and NVS --------------------------------------------------------------------------------


def _partitions_show(args: argparse.Namespace, out: TextIO) -> int:
    table = partition_table.load(args.table)
    rows = [
        {
            "name": p.name,
            "type": p.type_name,
            "subtype": p.subtype_name,
            "offset": p.offset,
            "size": p.size,
            "encrypted": p.encrypted,
        }
        for p in table.partitions
    ]
    lines = [f"{'name':<16} {'type':<8} {'subtype':<10} {'offset':>10} {'size':>10}"]
    lines += [
        f"{p.name:<16} {p.type_name:<8} {p.subtype_name:<10} {p.offset:>#10x} {p.size:>#10x}" for p in table.partitions
    ]
    _emit(out, args, lines, {"partitions": rows})
    return 0


def _load_credentials(args: argparse.Namespace) -> credentials.Credentials:
    def optional_cert(path: str | None) -> Any:
        return codesign.load_certificate_file(path) if path else None

    def optional_key(path: str | None) -> Any:
        if not path:
            return None
        from cryptography.hazmat.primitives import serialization

        data = read_bytes(path, "private key")
        try:
            loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
            return loader(data.replace(b"\r\n", b"\n"), password=None)
        except (TypeError, ValueError):
            raise InputFileError(f"private key {path}: not an unencrypted PEM/DER private key") from None

    code_verify = codesign.load_certificate_file(args.code_verify_cert)
    # The device checks no dates or extensions, but a non-P-256 key can never verify.
    codesign.check_key_type(code_verify.public_key(), f"certificate {args.code_verify_cert}")
    return credentials.Credentials(
        code_verify_certificate=code_verify,
        device_certificate=optional_cert(args.device_cert),
        device_key=optional_key(args.device_key),
        claim_certificate=optional_cert(args.claim_cert),
        claim_key=optional_key(args.claim_key),
        jitp_certificate=optional_cert(args.jitp_cert),
    )


def _nvs_build(args: argparse.Namespace, out: TextIO) -> int:
    table = partition_table.load(args.partition_table)
    creds = _load_credentials(args)
    extra = [credentials.parse_extra_value(v) for v in args.value or []]
    key = None
    if args.encrypt:
        key = _nvs_encryption_key(args) or nvs.generate_encryption_key()
    elif args.nvs_keys:
        raise InputFileError("--nvs-keys needs --encrypt")
    built = credentials.build_credential_image(
        table,
        creds,
        args.family,
        partition_label=args.partition,
        pkcs11_encoding=args.pkcs11_encoding,
        extra=extra,
        encryption_key=key,
    )
    # Everything is checked before the first file is written.
    image_path = write_atomic(args.out, built.image, private=built.holds_private_key)
    keys_path = None
    if args.encrypt and not args.nvs_keys:
        keys_path = write_atomic(
            Path(args.out).with_suffix(".nvs_keys.bin"), nvs.keys_partition_image(key or b""), private=True
        )
    csk = next(e for e in built.entries if e.key == credentials.CODE_VERIFY_KEY)
    fp = codesign.fingerprint(creds.code_verify_certificate)
    lines = [
        f"image        {image_path} ({len(built.image)} bytes = partition {built.partition.name!r})",
        f"flash at     0x{built.partition.offset:x} (from {table.source})",
        f"{credentials.CREDS_NAMESPACE}/{credentials.CODE_VERIFY_KEY:<8} {csk.kind}, certificate SHA-256 {fp}",
    ]
    lines += [f"entry        {e.describe()}" for e in built.entries if e is not csk]
    if keys_path:
        lines.append(f"NVS keys     {keys_path} (flash to the nvs_keys partition; keep it secret)")
    lines.append("read back    every entry matches what was written")
    _emit(
        out,
        args,
        lines,
        {
            "image": str(image_path),
            "partition": built.partition.name,
            "offset": built.partition.offset,
            "size": built.partition.size,
            "family": args.family,
            "code_verify_sha256_fingerprint": fp,
            "entries": [{"namespace": e.namespace, "key": e.key, "kind": e.kind} for e in built.entries],
            "nvs_keys": str(keys_path) if keys_path else None,
        },
    )
    return 0


def _nvs_show(args: argparse.Namespace, out: TextIO) -> int:
    data = read_bytes(args.image, "NVS image")
    image = nvs.read_image(data, encryption_key=_nvs_encryption_key(args), source=f"NVS image {args.image}")
    rows = []
    lines = [f"NVS v2, {image.size} bytes, {image.empty_pages} free page(s)"]
    for entry in image.entries:
        row: dict[str, Any] = {"namespace": entry.namespace, "key": entry.key, "kind": entry.kind}
        text = entry.describe()
        if isinstance(entry.value, int):
            row["value"] = entry.value
        else:
            row["size"] = len(entry.data)
            try:
                certificate = codesign.load_certificate(entry.data)
                fp = codesign.fingerprint(certificate)
                row["certificate_sha256_fingerprint"] = fp
                text += f", certificate {certificate.subject.rfc4514_string()} SHA-256 {fp}"
            except ProvisioningError:
                if entry.kind == "string" and b"PRIVATE KEY" not in entry.data:
                    row["value"] = entry.value
                    text += f" = {entry.value!r}"
        rows.append(row)
        lines.append(text)
    lines += [f"warning: {w}" for w in image.warnings]
    _emit(
        out,
        args,
        lines,
        {
            "size": image.size,
            "free_pages": image.empty_pages,
            "entries": rows,
            "warnings": list(image.warnings),
        },
    )
    return 0


# --- sign, verify, doctor ------------------------------------------------------------------------------


def _sign(args: argparse.Namespace, out: TextIO) -> int:
    key = codesign.load_private_key_file(args.key, _passphrase(args))
    firmware = read_bytes(args.firmware, "firmware")
    der = signing.sign_firmware(key, firmware)
    write_atomic(args.out, der)
    signature = signing.SignatureInput(der, str(args.out))
    _emit(
        out,
        args,
        [f"signature    {args.out} ({len(der)} bytes DER)", f"{signing.SIGNATURE_FIELD} {signature.base64}"],
        {"signature": str(args.out), "der_length": len(der), signing.SIGNATURE_FIELD: signature.base64},
    )
    return 0


def _device_certificates(args: argparse.Namespace, certificate_file: Path | None) -> list[signing.DeviceCertificate]:
    """The certificate(s) the devices verify with, from --nvs/--family, --embedded-in and a certificate file."""
    found: list[signing.DeviceCertificate] = []
    if args.nvs:
        if not args.family:
            raise InputFileError("--nvs needs --family beta|pkcs11 (how the firmware reads the certificate)")
        image = read_bytes(args.nvs, "NVS image")
        key = _nvs_encryption_key(args)
        found.append(signing.certificate_from_nvs(image, args.family, source=str(args.nvs), encryption_key=key))
    if args.embedded_in:
        app = read_bytes(args.embedded_in, "app image")
        found += signing.certificates_embedded_in(app, source=str(args.embedded_in))
    if certificate_file:
        certificate = codesign.load_certificate_file(certificate_file)
        found.append(signing.DeviceCertificate(certificate, f"certificate {certificate_file}"))
    return found


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    firmware = read_bytes(args.firmware, "firmware")
    signature = signing.load_signature(args.signature)
    candidates = _device_certificates(args, args.cert)
    report = signing.verify_update(
        firmware, signature, candidates, family=args.family, expected_fingerprint=args.expect_fingerprint
    )
    _emit(
        out,
        args,
        ["ACCEPTED     the device would accept this image"]
        + [f"ok           {check}" for check in report.checks]
        + [
            f"firmware     SHA-256 {report.firmware_sha256}, {report.firmware_size} bytes",
            f"certificate  SHA-256 {report.certificate_fingerprint}",
        ],
        report.to_json(),
    )
    return 0


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    if args.log == "-":
        lines = sys.stdin.read().splitlines()
    else:
        lines = read_bytes(args.log, "log").decode("utf-8", errors="replace").splitlines()
    found = doctor.diagnose(lines)
    human = []
    for d in found:
        human += [f"line {d.line_number}: {d.line}", f"  what:  {d.explanation}", f"  fix:   {d.fix}", ""]
    human.append(f"{len(found)} known failure(s) found" if found else "no known OTA or PKCS#11 failure found")
    _emit(out, args, human, {"findings": [d.to_json() for d in found]})
    return 4 if found else 0


# --- flashing and factory images -----------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> layout.FlashPlan:
    table = partition_table.load(args.partition_table)
    build = esp_build.load_build(args.build_dir) if getattr(args, "build_dir", None) else None
    return layout.plan_flash(
        table,
        read_bytes(args.nvs, "NVS image"),
        partition_label=args.partition,
        build=build,
        chip=getattr(args, "chip", None),
        nvs_encryption_key=_nvs_encryption_key(args),
    )


def _flash(args: argparse.Namespace, out: TextIO) -> int:
    if not args.build_dir and not args.no_firmware:
        raise InputFileError("give --build-dir BUILD to flash the firmware too, or --no-firmware for credentials only")
    plan = _plan(args)
    expected = codesign.load_certificate_file(args.code_verify_cert) if args.code_verify_cert else None
    report = esptool_device.flash_device(
        plan,
        port=args.port,
        baud=args.baud,
        stub=not args.no_stub,
        erase_storage=args.erase_storage,
        expected_certificate=expected,
        quiet=args.json,
        progress=not args.json,
    )
    lines = [f"wrote        {name} at 0x{offset:x} ({size} bytes)" for name, offset, size in report.regions]
    if report.code_verify_fingerprint:
        assert report.code_verify_location is not None
        match = ""
        if report.matches_expected:
            match = f", matches {args.code_verify_cert}"
        lines.append(
            f"verified     {credentials.CREDS_NAMESPACE}/{credentials.CODE_VERIFY_KEY} present at "
            f"0x{report.code_verify_location:x}, certificate SHA-256 {report.code_verify_fingerprint}{match}"
        )
    elif plan.nvs_encrypted:
        lines.append("verified     NVS partition read back byte for byte (encrypted: entries not decoded)")
    else:
        lines.append(f"WARNING      no {credentials.CREDS_NAMESPACE}/{credentials.CODE_VERIFY_KEY} in the image")
    lines.append(f"reset        {report.chip} on {report.port}")
    _emit(out, args, lines, report.to_json())
    return 0


def _image_merge(args: argparse.Namespace, out: TextIO) -> int:
    merged = factory_image.merge_factory_image(_plan(args), quiet=args.json)
    image_path = write_atomic(args.out, merged.image)
    sidecar_path = write_atomic(
        Path(str(args.out) + ".json"), (json.dumps(merged.sidecar, indent=2, sort_keys=True) + "\n").encode()
    )
    lines = [f"image        {image_path} ({len(merged.image)} bytes, sha256 {merged.sidecar['sha256']})"]
    lines += [
        f"region       {r['name']:<16} 0x{r['offset']:06x} {r['size']:>8} bytes" for r in merged.sidecar["regions"]
    ]
    lines.append(f"sidecar      {sidecar_path}")
    _emit(out, args, lines, {"image": str(image_path), "sidecar": str(sidecar_path), **merged.sidecar})
    return 0


def _image_inspect(args: argparse.Namespace, out: TextIO) -> int:
    report = factory_image.inspect_merged(read_bytes(args.image, "merged image"))
    lines = [f"partition table at 0x{report['table_offset']:x}, image {report['size']} bytes"]
    for p in report["partitions"]:
        text = f"{p['name']:<16} {p['type']}/{p['subtype']:<8} 0x{p['offset']:06x} {p['content']}"
        if "entries" in p:
            text += ": " + ", ".join(f"{e['namespace']}/{e['key']} ({e['kind']})" for e in p["entries"])
        if "code_verify_sha256_fingerprint" in p:
            text += f"; P11_CSK SHA-256 {p['code_verify_sha256_fingerprint']}"
        if "version" in p:
            text += f" {p.get('project', '')} {p['version']}"
        lines.append(text)
    _emit(out, args, lines, report)
    return 0


# --- AWS ----------------------------------------------------------------------------------------------


def _aws(args: argparse.Namespace) -> aws.Aws:
    return aws.connect(profile=args.profile, region=args.region)


def _codesign_import(args: argparse.Namespace, out: TextIO) -> int:
    certificate = codesign.load_certificate_file(args.cert)
    key = codesign.load_private_key_file(args.key, _passphrase(args))
    imported = aws_codesign.import_code_signing_certificate(_aws(args), certificate, key)
    lines = [imported.arn, f"{'found existing' if imported.reused else 'imported'} (SHA-256 {imported.fingerprint})"]
    if args.write_context:
        path = aws_codesign.write_cdk_context(args.write_context, imported.arn)
        lines.append(f"wrote {aws_codesign.CONTEXT_KEY} to {path}: the next `cdk deploy` creates the Signer profile")
    else:
        lines.append(f"next: cdk deploy --all -c {aws_codesign.CONTEXT_KEY}={imported.arn}")
    _emit(
        out, args, lines, {"arn": imported.arn, "reused": imported.reused, "sha256_fingerprint": imported.fingerprint}
    )
    return 0


def _signer_profile(args: argparse.Namespace, out: TextIO) -> int:
    result = aws_codesign.put_signing_profile(_aws(args), args.name, args.certificate_arn)
    _emit(out, args, [f"Signer profile {result['name']} ({result['arn']}) version {result['version']}"], result)
    return 0


def _device_register(args: argparse.Namespace, out: TextIO) -> int:
    session = _aws(args)
    policy = args.policy or aws.stack_values(session, args.stage)["DevicePolicyName"]
    result = registration.register_device(session, args.thing, args.out, policy_name=policy)
    lines = [
        f"thing        {result.thing_name} ({'existing certificate reused' if result.reused else 'registered'})",
        f"certificate  {result.certificate_id} (active, policy {policy} attached)",
        f"files        {args.out}/{registration.DEVICE_KEY} (0600, never leaves this machine), "
        f"{registration.DEVICE_CERT}, {registration.ROOT_CA}",
        f"endpoint     {result.endpoint}",
        "next: nvs build ... --device-cert DIR/device.crt --device-key DIR/device.key",
    ]
    if not result.certificate_matches_key:
        lines.append("WARNING      the endpoint issued a certificate for another key (local emulator): demo only")
    _emit(out, args, lines, result.to_json())
    return 0


def _trust(args: argparse.Namespace) -> ota.DeviceTrust:
    certificates = _device_certificates(args, args.device_cert)
    return ota.DeviceTrust(tuple(certificates), args.expect_fingerprint, args.family)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def _ota_create(args: argparse.Namespace, out: TextIO) -> int:
    session = _aws(args)
    trust = _trust(args)
    firmware_bytes = read_bytes(args.firmware, "firmware")
    key = codesign.load_private_key_file(args.sign_key, _passphrase(args)) if args.sign_key else None
    bucket, role = args.bucket, args.role_arn
    if not bucket or not role:
        values = aws.stack_values(session, args.stage)
        bucket = bucket or values["FirmwareBucketName"]
        role = role or values["OtaServiceRoleArn"]
    request = ota.OtaRequest(
        firmware=firmware_bytes,
        device_path=args.device_path,
        targets=ota.Targets(_split(args.targets), _split(args.thing_groups)),
        bucket=bucket,
        role_arn=role,
        trust=trust,
        via=args.via,
        protocol=args.protocol,
        signing_profile=args.signing_profile,
        signing_key=key,
        certfile=args.certfile,
        ota_id=args.ota_id,
        rollout=ota.Rollout(
            maximum_per_minute=args.rollout_rate,
            abort_failure_percent=args.abort_percent,
            timeout_minutes=args.timeout_minutes,
            continuous=args.continuous,
        ),
    )
    result = ota.create_ota(session, request)
    lines = [f"pre-flight   {check}" for check in result.preflight]
    lines += [
        f"firmware     s3://{result.bucket}/{result.key} (version {result.version_id})",
        f"created      {'OTA update' if result.via == 'ota-update' else 'job'} {result.ota_id}",
        f"status       device-provisioning ota status {result.ota_id}",
    ]
    _emit(out, args, lines, result.to_json())
    return 0


def _ota_status(args: argparse.Namespace, out: TextIO) -> int:
    status = ota.ota_status(_aws(args), args.id)
    lines = [f"{status['ota_id']}: {status['status']}"]
    lines += [f"  {e['thing']:<32} {e['status']}" for e in status["executions"]]
    _emit(out, args, lines, status)
    return 0


# --- factory batches ------------------------------------------------------------------------------------


def _batch_prepare(args: argparse.Namespace, out: TextIO) -> int:
    from device_provisioning.factory import batch
    from device_provisioning.factory import inputs as batch_input

    config = batch_input.load_config(args.config)
    session = _aws(args) if config.registration == "per-device" else None
    summary = batch.prepare_batch(
        args.devices, args.config, args.out, workers=args.workers, aws=session,
        progress_stream=None if args.json else sys.stderr,
    )  # fmt: skip
    lines = [
        f"batch        {summary.directory}: {summary.devices} devices in {summary.seconds:.1f}s "
        f"({summary.rate:,.0f}/s)",
        "states       " + ", ".join(f"{state}={count}" for state, count in sorted(summary.counts.items())),
        f"manifest     {summary.directory / batch.MANIFEST}",
    ]
    if summary.failed:
        lines.append(f"FAILED       {summary.failed} device(s); see `device-provisioning batch status {args.out}`")
    _emit(out, args, lines, summary.to_json())
    return 4 if summary.failed else 0


def _batch_status(args: argparse.Namespace, out: TextIO) -> int:
    from device_provisioning.factory import batch

    status = batch.batch_status(args.dir)
    lines = [f"{status['directory']}: {status['devices']} devices"]
    lines += [f"  {state:<12} {count}" for state, count in sorted(status["states"].items())]
    lines += [f"  error {e['serial']}: {e['error']}" for e in status["errors"]]
    _emit(out, args, lines, status)
    return 0


def _batch_flash(args: argparse.Namespace, out: TextIO) -> int:
    from device_provisioning.factory import station

    results = station.flash_station(
        args.dir, _split(args.ports), stub=not args.no_stub,
        report=(lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True)),
    )  # fmt: skip
    lines = [f"{r.port:<20} {r.serial:<16} {'verified' if r.ok else 'FAILED ' + r.detail}" for r in results]
    _emit(out, args, lines, {"results": [r.to_json() for r in results]})
    return 0 if all(r.ok for r in results) else 4


# --- parser --------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _command(
    subparsers: Any, name: str, handler: Handler, help_: str, example: str, *, json_flag: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_, description=help_, epilog=f"example:\n  {example}", formatter_class=_Formatter
    )
    parser.set_defaults(handler=handler)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    return parser


def _aws_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE / default chain)")
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / profile)")


def _passphrase_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passphrase-env", metavar="VAR", help="environment variable holding the key's passphrase")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device-provisioning",
        description="Provision ESP32 devices for signed OTA updates on AWS IoT.",
        formatter_class=_Formatter,
        epilog="example:\n  device-provisioning codesign create --out keys/",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # codesign
    codesign_parser = groups.add_parser("codesign", help="code-signing key and certificate")
    cs = codesign_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        cs,
        "create",
        _codesign_create,
        "create an ECDSA P-256 key and self-signed code-signing certificate",
        "device-provisioning codesign create --out keys/ --common-name 'Acme OTA signing' --days 1095",
    )
    p.add_argument("--out", required=True, type=Path, help="directory for codesign.key and codesign.crt")
    p.add_argument("--common-name", default=codesign.DEFAULT_COMMON_NAME)
    p.add_argument("--organization")
    p.add_argument("--days", type=int, default=codesign.DEFAULT_DAYS, help="validity (default: 3 years)")
    _passphrase_option(p)
    p = _command(
        cs,
        "csr",
        _codesign_csr,
        "create a key and a CSR for a company CA",
        "device-provisioning codesign csr --out keys/ --common-name 'Acme OTA signing'",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--common-name", default=codesign.DEFAULT_COMMON_NAME)
    p.add_argument("--organization")
    _passphrase_option(p)
    p = _command(
        cs,
        "import-cert",
        _codesign_import_cert,
        "store the CA-issued certificate beside its key",
        "device-provisioning codesign import-cert --out keys/ --cert issued.crt",
    )
    p.add_argument("--out", required=True, type=Path, help="directory holding codesign.key")
    p.add_argument("--cert", required=True, type=Path)
    _passphrase_option(p)
    p = _command(
        cs,
        "show",
        _codesign_show,
        "show a certificate and what is wrong with it for OTA use",
        "device-provisioning codesign show keys/codesign.crt --key keys/codesign.key",
    )
    p.add_argument("cert", type=Path)
    p.add_argument("--key", type=Path, help="also check that this key matches")
    _passphrase_option(p)
    p = _command(
        cs,
        "install-embedded",
        _codesign_install_embedded,
        "write the certificate to main/certs/aws_codesign.crt of a stock master/LTS demo project",
        "device-provisioning codesign install-embedded --project examples/ota/ota_mqtt --cert keys/codesign.crt",
    )
    p.add_argument("--project", required=True, type=Path)
    p.add_argument("--cert", required=True, type=Path)

    p = _command(
        cs,
        "import",
        _codesign_import,
        "import certificate + key into ACM (once) for AWS Signer",
        "device-provisioning codesign import --cert keys/codesign.crt --key keys/codesign.key "
        "--write-context cdk.context.json",
    )
    p.add_argument("--cert", required=True, type=Path)
    p.add_argument("--key", required=True, type=Path)
    p.add_argument(
        "--write-context",
        type=Path,
        metavar="CDK_CONTEXT_JSON",
        help="record the ARN for the stacks (else the -c flag is printed)",
    )
    _passphrase_option(p)
    _aws_options(p)

    signer_parser = groups.add_parser("signer", help="AWS Signer")
    sg = signer_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        sg,
        "profile",
        _signer_profile,
        "create/update the AmazonFreeRTOS-Default signing profile",
        "device-provisioning signer profile --name dev_esp_ota_signing --certificate-arn arn:aws:acm:...",
    )
    p.add_argument("--name", required=True)
    p.add_argument("--certificate-arn", required=True)
    _aws_options(p)

    device_parser = groups.add_parser("device", help="devices on AWS IoT")
    dv = device_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        dv,
        "register",
        _device_register,
        "register a thing with a certificate from a local key's CSR",
        "device-provisioning device register board-42 --out devices/board-42",
    )
    p.add_argument("thing")
    p.add_argument("--out", required=True, type=Path, help="directory for device.key (0600), device.crt, root CA")
    p.add_argument("--policy", help="device IoT policy (default: the DeviceFleet stack's)")
    p.add_argument("--stage", default="dev")
    _aws_options(p)

    ota_parser = groups.add_parser("ota", help="OTA updates")
    ot = ota_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        ot,
        "create",
        _ota_create,
        "pre-flight, upload and create an OTA update or job",
        "device-provisioning ota create --firmware build/app.bin --targets board-42 "
        "--sign-key keys/codesign.key --nvs creds.bin --family beta --via job --protocol http",
    )
    p.add_argument("--firmware", required=True, type=Path)
    p.add_argument("--targets", help="thing names, comma-separated")
    p.add_argument("--thing-groups", help="thing group names, comma-separated")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--signing-profile", help="AWS Signer profile (CreateOTAUpdate signs in the cloud)")
    how.add_argument("--sign-key", type=Path, help="local code-signing key (custom signing)")
    _passphrase_option(p)
    p.add_argument("--via", choices=("ota-update", "job"), default="ota-update")
    p.add_argument("--protocol", choices=("mqtt", "http"), default="mqtt")
    p.add_argument("--certfile", default=credentials.CODE_VERIFY_LABEL, help="certificate name on the device")
    p.add_argument("--device-path", default="/device/firmware.bin", help="file path the device is told")
    p.add_argument("--nvs", type=Path, help="pre-flight: the devices' NVS image")
    p.add_argument("--family", choices=credentials.FAMILIES)
    p.add_argument("--embedded-in", type=Path, help="pre-flight: app image with the certificate compiled in")
    p.add_argument("--device-cert", type=Path, help="pre-flight: the certificate on the devices")
    p.add_argument("--expect-fingerprint", metavar="SHA256")
    p.add_argument("--bucket", help="firmware bucket (default: the stack's)")
    p.add_argument("--role-arn", help="OTA service role (default: the stack's)")
    p.add_argument("--stage", default="dev")
    p.add_argument("--ota-id")
    p.add_argument("--rollout-rate", type=int, metavar="PER_MINUTE")
    p.add_argument("--abort-percent", type=float, metavar="FAILED_PERCENT")
    p.add_argument("--timeout-minutes", type=int)
    p.add_argument("--continuous", action="store_true", help="also update devices added to the groups later")
    _aws_options(p)
    p = _command(
        ot,
        "status",
        _ota_status,
        "show an OTA update's job executions per thing",
        "device-provisioning ota status ota-1234 --json",
    )
    p.add_argument("id")
    _aws_options(p)

    batch_parser = groups.add_parser("batch", help="factory batches")
    bt = batch_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        bt,
        "prepare",
        _batch_prepare,
        "keys, CSRs, registration and NVS images for a CSV of devices",
        "device-provisioning batch prepare --devices devices.csv --config batch.toml --out batch-42",
    )
    p.add_argument("--devices", required=True, type=Path, help="CSV: serial,thing_name[,thing_group,<nvs values>]")
    p.add_argument("--config", required=True, type=Path, help="batch TOML ([batch], [registration], [nvs])")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    _aws_options(p)
    p = _command(
        bt, "status", _batch_status, "states and errors of a batch", "device-provisioning batch status batch-42"
    )
    p.add_argument("dir", type=Path)
    p = _command(
        bt,
        "flash",
        _batch_flash,
        "flash the next prepared devices, one board per port",
        "device-provisioning batch flash batch-42 --ports /dev/ttyUSB0,/dev/ttyUSB1",
    )
    p.add_argument("dir", type=Path)
    p.add_argument("--ports", required=True)
    p.add_argument("--no-stub", action="store_true")

    # partitions
    partitions_parser = groups.add_parser("partitions", help="partition tables")
    pt = partitions_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        pt,
        "show",
        _partitions_show,
        "show a partition table with computed offsets",
        "device-provisioning partitions show partitions_ota_mqtt.csv",
    )
    p.add_argument("table", type=Path, help="CSV or partition-table.bin")

    # nvs
    nvs_parser = groups.add_parser("nvs", help="NVS credential images")
    nv = nvs_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        nv,
        "build",
        _nvs_build,
        "build the NVS image holding the certificates where the firmware reads them",
        "device-provisioning nvs build --partition-table partitions.csv --family beta "
        "--code-verify-cert keys/codesign.crt --out creds.bin",
    )
    p.add_argument("--partition-table", required=True, type=Path, help="CSV or partition-table.bin")
    p.add_argument("--partition", default=credentials.DEFAULT_PARTITION, help="NVS partition label (default: storage)")
    p.add_argument(
        "--family",
        required=True,
        choices=credentials.FAMILIES,
        help="beta: NVS strings (PEM); pkcs11: NVS blobs (DER, or PEM+NUL)",
    )
    p.add_argument("--pkcs11-encoding", choices=credentials.PKCS11_ENCODINGS, default="der")
    p.add_argument("--code-verify-cert", required=True, type=Path, help="the code-signing certificate (P11_CSK)")
    p.add_argument("--device-cert", type=Path, help="device certificate (P11_Cert)")
    p.add_argument("--device-key", type=Path, help="device private key (P11_Key)")
    p.add_argument("--claim-cert", type=Path, help="fleet-provisioning claim certificate (P11_Claim_Cert)")
    p.add_argument("--claim-key", type=Path, help="claim private key (P11_Claim_Key)")
    p.add_argument("--jitp-cert", type=Path, help="JITP certificate (P11_JITP)")
    p.add_argument("--value", action="append", metavar="NS/KEY=VALUE", help="extra string value (repeatable)")
    p.add_argument("--encrypt", action="store_true", help="NVS encryption (devices with flash encryption)")
    p.add_argument("--nvs-keys", type=Path, help="existing nvs_keys partition image (else keys are generated)")
    p.add_argument("--out", required=True, type=Path)
    p = _command(
        nv,
        "show",
        _nvs_show,
        "decode an NVS image (built here or read from a device)",
        "device-provisioning nvs show creds.bin --json",
    )
    p.add_argument("image", type=Path)
    p.add_argument("--nvs-keys", type=Path, help="nvs_keys partition image, for encrypted NVS")

    # flash / image
    p = _command(
        groups,
        "flash",
        _flash,
        "write the NVS image (and firmware) with esptool, read back and verify",
        "device-provisioning flash --port /dev/ttyUSB0 --partition-table partitions.csv --nvs creds.bin --no-firmware",
    )
    p.add_argument("--port", help="serial port (default: auto-detect, like esptool)")
    p.add_argument("--baud", type=int, default=esptool_device.DEFAULT_BAUD)
    p.add_argument("--chip", help="expected chip (esp32, esp32s3, ...); checked against the build and the device")
    p.add_argument("--partition-table", required=True, type=Path, help="CSV or partition-table.bin")
    p.add_argument("--partition", default=credentials.DEFAULT_PARTITION)
    p.add_argument("--nvs", required=True, type=Path, help="NVS image from `nvs build`")
    p.add_argument("--nvs-keys", type=Path, help="nvs_keys image, to decode an NVS-encrypted image")
    firmware = p.add_mutually_exclusive_group()
    firmware.add_argument("--build-dir", type=Path, help="ESP-IDF build directory (reads flasher_args.json)")
    firmware.add_argument("--no-firmware", action="store_true", help="credentials only (fast re-provisioning)")
    p.add_argument("--erase-storage", action="store_true", help="erase the NVS partition range first")
    p.add_argument("--code-verify-cert", type=Path, help="check the flashed P11_CSK is this certificate")
    p.add_argument("--no-stub", action="store_true", help="use the ROM loader only (slower, most compatible)")
    image_parser = groups.add_parser("image", help="factory images")
    im = image_parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = _command(
        im,
        "merge",
        _image_merge,
        "merge bootloader, table, otadata, app and NVS into one factory image",
        "device-provisioning image merge --partition-table partitions.csv --nvs creds.bin "
        "--build-dir build --out factory.bin",
    )
    p.add_argument("--partition-table", required=True, type=Path)
    p.add_argument("--partition", default=credentials.DEFAULT_PARTITION)
    p.add_argument("--nvs", required=True, type=Path)
    p.add_argument("--nvs-keys", type=Path)
    p.add_argument("--build-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="merged image; a .json sidecar is written beside it")
    p = _command(
        im,
        "inspect",
        _image_inspect,
        "show what each partition of a merged image holds",
        "device-provisioning image inspect factory.bin --json",
    )
    p.add_argument("image", type=Path)

    # sign / verify / doctor
    p = _command(
        groups,
        "sign",
        _sign,
        "sign firmware as AWS Signer's AmazonFreeRTOS-Default does",
        "device-provisioning sign --key keys/codesign.key --firmware build/app.bin --out app.sig",
    )
    p.add_argument("--key", required=True, type=Path)
    p.add_argument("--firmware", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="DER signature file")
    _passphrase_option(p)
    p = _command(
        groups,
        "verify",
        _verify,
        "answer: will this device accept this image?",
        "device-provisioning verify --firmware build/app.bin --signature job.json --nvs creds.bin --family beta",
    )
    p.add_argument("--firmware", required=True, type=Path)
    p.add_argument("--signature", required=True, help="DER file, base64 string, or OTA job document JSON")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--nvs", type=Path, help="NVS image the device was flashed with")
    source.add_argument("--embedded-in", type=Path, help="app image with the certificate compiled in")
    source.add_argument("--cert", type=Path, help="certificate file")
    p.add_argument("--family", choices=credentials.FAMILIES)
    p.add_argument("--nvs-keys", type=Path, help="nvs_keys partition image, for encrypted NVS")
    p.add_argument("--expect-fingerprint", metavar="SHA256", help="the code-signing certificate you expect")
    p = _command(
        groups,
        "doctor",
        _doctor,
        "explain OTA/PKCS#11 failures in a device log (exit 4 if any)",
        "idf.py monitor | tee boot.log; device-provisioning doctor boot.log",
    )
    p.add_argument("log", help="log file, or - for stdin")
    return parser


# --- entry points --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; the only place that prints errors and chooses exit codes."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        handler: Handler = args.handler
        return handler(args, out)
    except ProvisioningError as error:
        message = " ".join(str(error).split())
        err.write(f"ERROR {message}\n")
        return error.exit_code
    except KeyboardInterrupt:
        err.write("ERROR interrupted\n")
        return 130


def run() -> None:
    """Console entry point. A reader that closes the pipe early (``| head``) ends the command quietly."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush of stdout at exit: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    sys.exit(code)

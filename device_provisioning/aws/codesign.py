"""The code-signing certificate on the AWS side: ACM import and the Signer signing profile."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning.aws import Aws, aws_errors
from device_provisioning.contract import CODE_SIGNING_CERTIFICATE_ARN_CONTEXT, SIGNER_PLATFORM_ID
from device_provisioning.device.credentials import CODE_VERIFY_LABEL
from device_provisioning.errors import AwsError, CertificateError
from device_provisioning.files import write_atomic
from device_provisioning.identity import codesign_checks, pki

FINGERPRINT_TAG = "esp-ota:sha256"
SIGNER_PLATFORM = SIGNER_PLATFORM_ID
CONTEXT_KEY = CODE_SIGNING_CERTIFICATE_ARN_CONTEXT


@dataclass(frozen=True)
class ImportedCertificate:
    """A code-signing certificate in ACM: its ARN, fingerprint, and whether an earlier import was found."""

    arn: str
    fingerprint: str
    reused: bool


def _find_imported(acm: Any, fingerprint: str) -> str | None:
    """An ACM certificate with this fingerprint (by our tag, else by comparing the certificate)."""
    for page in acm.get_paginator("list_certificates").paginate():
        for summary in page["CertificateSummaryList"]:
            arn = summary["CertificateArn"]
            tags = acm.list_tags_for_certificate(CertificateArn=arn).get("Tags", [])
            if any(t["Key"] == FINGERPRINT_TAG and t.get("Value") == fingerprint for t in tags):
                return str(arn)
            body = acm.get_certificate(CertificateArn=arn).get("Certificate", "")
            try:
                if pki.fingerprint(pki.load_certificate(body.encode())) == fingerprint:
                    return str(arn)
            except CertificateError:
                continue
    return None


def import_code_signing_certificate(
    aws: Aws, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> ImportedCertificate:
    """Import certificate + key into ACM once; a re-import finds the existing ARN.

    The private key is sent only over TLS, or to an emulator on this machine: an ``http://``
    endpoint elsewhere (``AWS_ENDPOINT_URL``) is refused with :class:`AwsError` before any call.
    """
    endpoint = urlsplit(aws.endpoint_url or "https://acm")
    if endpoint.scheme != "https" and not aws.is_local_endpoint:
        raise AwsError(
            f"refusing to send the code-signing private key to {aws.endpoint_url} without TLS; "
            "use an https:// AWS_ENDPOINT_URL (or unset it for AWS itself)"
        )
    codesign_checks.require_usable(codesign_checks.check_certificate(certificate, key=key), "code-signing certificate")
    fingerprint = pki.fingerprint(certificate)
    acm = aws.client("acm")
    with aws_errors("importing the code-signing certificate into ACM"):
        existing = _find_imported(acm, fingerprint)
        if existing:
            return ImportedCertificate(existing, fingerprint, reused=True)
        # ACM needs the key unencrypted; it never touches disk here.
        response = acm.import_certificate(
            Certificate=pki.certificate_pem(certificate),
            PrivateKey=pki.private_key_pem(key),
            Tags=[{"Key": FINGERPRINT_TAG, "Value": fingerprint}, {"Key": "project", "Value": "esp-ota-provisioning"}],
        )
    return ImportedCertificate(str(response["CertificateArn"]), fingerprint, reused=False)


def write_cdk_context(path: str | Path, arn: str) -> Path:
    """Record the ARN as CDK context so the next `cdk deploy` creates the signing profile.

    In ``cdk.json`` (committed: teammates and CI deploy with it) under its ``context``; in a flat
    context file such as ``cdk.context.json`` (git-ignored: this machine only) at the top level.
    """
    target = Path(path)
    context: dict[str, Any] = {}
    if target.exists():
        try:
            context = json.loads(target.read_text())
        except json.JSONDecodeError:
            raise CertificateError(f"{target}: not valid JSON; fix or remove it") from None
        if not isinstance(context, dict):
            raise CertificateError(f"{target}: holds {type(context).__name__}, not a JSON object; fix or remove it")
    if "app" in context:  # cdk.json: the app's settings, with its context under "context"
        section = context.setdefault("context", {})
        if not isinstance(section, dict):
            raise CertificateError(f'{target}: its "context" is not a JSON object; fix it')
        section[CONTEXT_KEY] = arn
    else:
        context[CONTEXT_KEY] = arn
    # cdk.json keeps its order (a reviewed, committed file); a flat context file is sorted.
    return write_atomic(target, (json.dumps(context, indent=2, sort_keys="app" not in context) + "\n").encode())


def put_signing_profile(
    aws: Aws, name: str, certificate_arn: str, *, certificate_name: str = CODE_VERIFY_LABEL
) -> SignerProfileVersion:
    """Create or update the Signer profile (for users who do not deploy the stack).

    ``certname`` becomes the job document's ``certfile``: the beta PAL looks it up as a PKCS#11
    label by prefix, so it must begin with ``Code Verify Key`` to reach ``P11_CSK``.
    """
    with aws_errors(f"creating Signer profile {name}"):
        response = aws.client("signer").put_signing_profile(
            profileName=name,
            platformId=SIGNER_PLATFORM,
            signingMaterial={"certificateArn": certificate_arn},
            signingParameters={"certname": certificate_name},
        )
    return SignerProfileVersion(name, str(response.get("arn")), str(response.get("profileVersion")))


@dataclass(frozen=True)
class SignerProfileVersion:
    """What PutSigningProfile answered: the profile's name, ARN and version."""

    name: str
    arn: str
    version: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arn": self.arn, "version": self.version}


@dataclass(frozen=True)
class SigningProfile:
    """A Signer profile and the certificate it signs with (read back from ACM)."""

    name: str
    certificate_arn: str
    certificate: x509.Certificate


def signing_certificate_of_profile(aws: Aws, profile_name: str) -> x509.Certificate:
    """The certificate AWS Signer will sign with: Signer profile -> ACM certificate."""
    return read_signing_profile(aws, profile_name).certificate


def read_signing_profile(aws: Aws, profile_name: str) -> SigningProfile:
    """The profile's ACM certificate ARN and the certificate behind it."""
    with aws_errors(f"reading Signer profile {profile_name}"):
        profile = aws.client("signer").get_signing_profile(profileName=profile_name)
    platform = profile.get("platformId")
    if platform and platform != SIGNER_PLATFORM:
        raise CertificateError(f"Signer profile {profile_name} is for {platform}; ESP32 OTA needs {SIGNER_PLATFORM}")
    arn = profile.get("signingMaterial", {}).get("certificateArn")
    if not arn:
        raise CertificateError(f"Signer profile {profile_name} has no signing certificate")
    with aws_errors(f"reading ACM certificate {arn}"):
        body = aws.client("acm").get_certificate(CertificateArn=arn)["Certificate"]
    return SigningProfile(profile_name, str(arn), pki.load_certificate(body.encode(), f"ACM certificate {arn}"))

"""Code signing with an AWS KMS key: the private key never leaves KMS and is never read here.

KMS signs the SHA-256 digest (``MessageType=DIGEST``, ``ECDSA_SHA_256``), so firmware of any size is
signed without being sent; the key must be ``ECC_NIST_P256`` with ``SIGN_VERIFY`` usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.errors import CertificateError

KEY_SPEC = "ECC_NIST_P256"
ALGORITHM = "ECDSA_SHA_256"


@dataclass(frozen=True)
class KmsSigner:
    """A KMS key as a :class:`~device_provisioning.identity.signers.CodeSigner`."""

    kms: Any
    key_id: str
    key_arn: str
    public: ec.EllipticCurvePublicKey

    @property
    def description(self) -> str:
        return f"KMS key {self.key_arn}"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.public

    def sign_digest(self, digest: bytes) -> bytes:
        with aws_errors(f"signing with {self.description}"):
            response = self.kms.sign(
                KeyId=self.key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm=ALGORITHM
            )
        return bytes(response["Signature"])


def kms_signer(aws: Aws, key_id: str) -> KmsSigner:
    """The KMS key ``key_id`` (id, ARN or alias/...), checked to be a P-256 signing key."""
    kms = aws.client("kms")
    with aws_errors(f"reading KMS key {key_id}"):
        response = kms.get_public_key(KeyId=key_id)
    spec = response.get("KeySpec") or response.get("CustomerMasterKeySpec")
    if spec != KEY_SPEC or response.get("KeyUsage") != "SIGN_VERIFY":
        raise CertificateError(
            f"KMS key {key_id} is {spec}/{response.get('KeyUsage')}; ESP32 OTA needs an {KEY_SPEC} SIGN_VERIFY key "
            "(aws kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY)"
        )
    public = serialization.load_der_public_key(bytes(response["PublicKey"]))
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CertificateError(f"KMS key {key_id}: its public key is not an EC key")
    return KmsSigner(kms, key_id, str(response.get("KeyId", key_id)), public)

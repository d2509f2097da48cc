"""Where the code-signing key lives: a file (development) here; AWS KMS in :mod:`device_provisioning.aws.kms`.

Every signer produces what the device verifies: an ECDSA P-256 signature over a SHA-256 digest, strict
ASN.1 DER. Signing a digest means firmware of any size is signed without sending it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils


class CodeSigner(Protocol):
    """A code-signing key, wherever it is kept."""

    @property
    def description(self) -> str: ...

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """DER ECDSA signature of a SHA-256 digest."""
        ...


@dataclass(frozen=True)
class FileSigner:
    """A key read from a file (``codesign.key``)."""

    key: ec.EllipticCurvePrivateKey
    description: str = "key file"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        return self.key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

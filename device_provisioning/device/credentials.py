"""Which NVS entries each esp-aws-iot firmware family reads, in which type and encoding.

From the firmware source (see ``shared/reference``): the PKCS#11 PAL reads partition ``storage``,
namespace ``creds``; label ``Code Verify Key`` maps to key ``P11_CSK``. The ``beta`` family reads
values with ``nvs_get_str`` (NVS string holding PEM); the ``pkcs11`` family with ``nvs_get_blob``
(blob holding DER, or PEM plus one NUL so mbedTLS parses it as PEM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from device_provisioning import contract
from device_provisioning.device import family as families
from device_provisioning.device import nvs, nvs_build
from device_provisioning.device.partition_types import DATA, SUBTYPES, Partition, PartitionTable
from device_provisioning.errors import NvsError
from device_provisioning.files import read_bytes
from device_provisioning.identity import pki

# The families whose firmware reads P11_CSK from NVS (the rules live in device/family.py).
FAMILIES = families.NVS_CERTIFICATE
PKCS11_ENCODINGS = ("der", "pem")
CREDS_NAMESPACE = "creds"
DEFAULT_PARTITION = "storage"
# Erased pages a credential image must leave: NVS's reserved page, and one for the PAL's own writes.
PAL_EMPTY_PAGES = 2
# The OTA job's `certfile`; the beta PAL matches PKCS#11 labels by prefix.
CODE_VERIFY_LABEL = contract.CODE_VERIFY_LABEL

CODE_VERIFY_KEY = "P11_CSK"
DEVICE_CERT_KEY = "P11_Cert"
DEVICE_KEY_KEY = "P11_Key"
CLAIM_CERT_KEY = "P11_Claim_Cert"
CLAIM_KEY_KEY = "P11_Claim_Key"
JITP_CERT_KEY = "P11_JITP"


@dataclass(frozen=True)
class Credentials:
    """What goes into the image; only the code-verification certificate is mandatory."""

    code_verify_certificate: x509.Certificate
    device_certificate: x509.Certificate | None = None
    device_key: PrivateKeyTypes | None = None
    claim_certificate: x509.Certificate | None = None
    claim_key: PrivateKeyTypes | None = None
    jitp_certificate: x509.Certificate | None = None
    # Intermediates that came with the device/claim certificate, in chain order (issuer of the one before).
    device_chain: tuple[x509.Certificate, ...] = ()
    claim_chain: tuple[x509.Certificate, ...] = ()

    @property
    def holds_private_key(self) -> bool:
        return self.device_key is not None or self.claim_key is not None

    @classmethod
    def from_files(
        cls,
        code_verify_cert: str | Path,
        *,
        device_cert: str | Path | None = None,
        device_key: str | Path | None = None,
        claim_cert: str | Path | None = None,
        claim_key: str | Path | None = None,
        jitp_cert: str | Path | None = None,
    ) -> Credentials:
        """Read the credentials from files (PEM or DER; private keys unencrypted).

        Raises :class:`InputFileError` for an unreadable file and :class:`CertificateError` for a
        code-verification certificate whose key is not P-256 (it could never verify on the device).
        """
        code_verify = pki.load_code_verify_certificate(code_verify_cert)
        # The device checks no dates or extensions, but a non-P-256 key can never verify.
        pki.check_key_type(code_verify.public_key(), f"certificate {code_verify_cert}")
        device_chain = pki.load_certificate_chain(device_cert) if device_cert else ()
        claim_chain = pki.load_certificate_chain(claim_cert) if claim_cert else ()
        return cls(
            code_verify_certificate=code_verify,
            device_certificate=device_chain[0] if device_chain else None,
            device_key=_optional_private_key(device_key),
            claim_certificate=claim_chain[0] if claim_chain else None,
            claim_key=_optional_private_key(claim_key),
            jitp_certificate=pki.load_certificate_file(jitp_cert) if jitp_cert else None,
            device_chain=device_chain[1:],
            claim_chain=claim_chain[1:],
        )


def _optional_private_key(path: str | Path | None) -> PrivateKeyTypes | None:
    if not path:
        return None
    return pki.read_private_key(
        read_bytes(path, "private key"),
        f"private key {path}",
        fix="give the device's key file (PEM or DER)",
        encrypted_fix="the device needs it unencrypted: `openssl pkey -in KEY -out PLAIN.key`",
    )


@dataclass(frozen=True)
class CredentialImage:
    """A built NVS image, the partition it is for, and the entries it holds."""

    image: bytes
    partition: Partition
    entries: tuple[nvs.NvsEntry, ...]
    holds_private_key: bool
    warnings: tuple[str, ...] = ()


def check_family(family: str) -> str:
    """Return ``family`` if its firmware reads the certificate from NVS; raise :class:`NvsError` otherwise."""
    if family not in FAMILIES:
        raise NvsError(f"firmware family {family!r}: use one of {', '.join(FAMILIES)}")
    return family


def nvs_kind(family: str) -> str:
    """How ``family`` firmware reads its NVS credentials: ``string`` (nvs_get_str) or ``blob``."""
    return families.get(check_family(family)).nvs_kind or "blob"


def _certificate_entry(
    key: str,
    certificate: x509.Certificate,
    family: str,
    pkcs11_encoding: str,
    chain: Sequence[x509.Certificate] = (),
) -> nvs.NvsEntry:
    # mbedtls_x509_crt_parse reads every certificate of a PEM buffer, so a chain is kept whole as PEM.
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *chain))
    as_string = nvs_kind(family) == "string"
    if chain and not as_string and pkcs11_encoding == "der":
        raise NvsError(
            f"{key}: a DER blob holds one certificate, but this one comes with {len(chain)} intermediate(s); "
            "pass --pkcs11-encoding pem to keep the chain, or give the certificate alone"
        )
    if as_string:
        return nvs.NvsEntry(CREDS_NAMESPACE, key, "string", pem.decode())
    if pkcs11_encoding == "pem":
        # mbedtls_x509_crt_parse takes a buffer as PEM only if it is NUL-terminated.
        return nvs.NvsEntry(CREDS_NAMESPACE, key, "blob", pem + b"\x00")
    return nvs.NvsEntry(CREDS_NAMESPACE, key, "blob", certificate.public_bytes(serialization.Encoding.DER))


def _key_entry(key: str, private_key: PrivateKeyTypes, family: str, pkcs11_encoding: str) -> nvs.NvsEntry:
    # SEC1/PKCS#1 ("traditional"), what mbedtls_pk_write_key_der writes and mbedtls_pk_parse_key reads.
    fmt = serialization.PrivateFormat.TraditionalOpenSSL
    none = serialization.NoEncryption()
    if nvs_kind(family) == "string":
        pem = private_key.private_bytes(serialization.Encoding.PEM, fmt, none)
        return nvs.NvsEntry(CREDS_NAMESPACE, key, "string", pem.decode())
    if pkcs11_encoding == "pem":
        return nvs.NvsEntry(
            CREDS_NAMESPACE,
            key,
            "blob",
            private_key.private_bytes(serialization.Encoding.PEM, fmt, none) + b"\x00",
        )
    return nvs.NvsEntry(CREDS_NAMESPACE, key, "blob", private_key.private_bytes(serialization.Encoding.DER, fmt, none))


def credential_entries(
    credentials: Credentials,
    family: str,
    *,
    pkcs11_encoding: str = "der",
    extra: Sequence[nvs.NvsEntry] = (),
) -> list[nvs.NvsEntry]:
    """The NVS entries for ``credentials`` as ``family`` firmware reads them, plus ``extra`` values."""
    check_family(family)
    if pkcs11_encoding not in PKCS11_ENCODINGS:
        raise NvsError(f"pkcs11 encoding {pkcs11_encoding!r}: use der or pem")
    pairs = (
        ("device", credentials.device_certificate, credentials.device_key),
        ("claim", credentials.claim_certificate, credentials.claim_key),
    )
    for what, certificate, private_key in pairs:
        if (certificate is None) != (private_key is None):
            raise NvsError(f"{what} certificate and {what} key go together; give both or neither")
        if certificate is None or private_key is None:
            continue
        if not isinstance(private_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise NvsError(
                f"the {what} key is {type(private_key).__name__}; the PKCS#11 PAL takes EC P-256 or RSA keys"
            )
        if isinstance(private_key, ec.EllipticCurvePrivateKey) and not isinstance(private_key.curve, ec.SECP256R1):
            raise NvsError(f"the {what} key is on {private_key.curve.name}; the PKCS#11 PAL takes P-256 (secp256r1)")
        if not pki.key_matches_certificate(private_key, certificate):
            raise NvsError(
                f"the {what} certificate is not for the {what} key: the device could not connect with them; "
                "give the certificate AWS IoT issued for this key"
            )
    certificates: Mapping[str, x509.Certificate | None] = {
        CODE_VERIFY_KEY: credentials.code_verify_certificate,
        DEVICE_CERT_KEY: credentials.device_certificate,
        CLAIM_CERT_KEY: credentials.claim_certificate,
        JITP_CERT_KEY: credentials.jitp_certificate,
    }
    keys: Mapping[str, PrivateKeyTypes | None] = {
        DEVICE_KEY_KEY: credentials.device_key,
        CLAIM_KEY_KEY: credentials.claim_key,
    }
    chains = {DEVICE_CERT_KEY: credentials.device_chain, CLAIM_CERT_KEY: credentials.claim_chain}
    entries = [
        _certificate_entry(name, cert, family, pkcs11_encoding, chains.get(name, ()))
        for name, cert in certificates.items()
        if cert
    ]
    entries += [_key_entry(name, key, family, pkcs11_encoding) for name, key in keys.items() if key]
    for entry in extra:
        if entry.namespace == CREDS_NAMESPACE:
            raise NvsError(
                f"extra value {entry.namespace}/{entry.key}: namespace 'creds' belongs to the PKCS#11 PAL; "
                "choose another namespace (e.g. cfg/thing_name=...)"
            )
    return entries + list(extra)


def parse_extra_value(text: str) -> nvs.NvsEntry:
    """``NAMESPACE/KEY=VALUE`` from the command line, stored as an NVS string."""
    target, separator, value = text.partition("=")
    namespace, slash, key = target.partition("/")
    if not separator or not slash or not namespace or not key:
        raise NvsError(f"--value {text!r}: expected NAMESPACE/KEY=VALUE, e.g. cfg/thing_name=board-42")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NvsError(f"--value {namespace}/{key}: the value is not valid UTF-8 text") from None
    return nvs.NvsEntry(namespace.strip(), key.strip(), "string", value)


def partition_warnings(partition: Partition, flash_encryption: bool | None) -> list[str]:
    """Refuse an NVS partition the firmware cannot open; warn about one it opens only under conditions."""
    if not partition.encrypted:
        return []
    # esp_partition treats no partition as encrypted while flash encryption is off; with it on, nvs_flash
    # refuses an NVS partition flagged 'encrypted' (nvs_partition_lookup: ESP_ERR_NVS_WRONG_ENCRYPTION).
    problem = (
        f"partition {partition.name!r} is flagged 'encrypted': with flash encryption on, nvs_flash refuses to "
        "open it (ESP_ERR_NVS_WRONG_ENCRYPTION, 0x1119)"
    )
    if flash_encryption:
        raise NvsError(f"{problem}; remove the flag from the table and use NVS encryption (--encrypt) instead")
    return [f"{problem}; it is read only while flash encryption stays off"]


def build_pal_image(
    entries: Sequence[nvs.NvsEntry], partition_name: str, size: int, *, encryption_key: bytes | None = None
) -> bytes:
    """The verified NVS image of ``entries``, refused unless it leaves the PAL room for its own writes.

    NVS keeps one erased page for itself; the PAL's own PKCS11_PAL_SaveObject writes need room beyond it.
    """
    image, decoded = nvs_build.build_and_read(entries, size, encryption_key=encryption_key)
    if decoded.empty_pages < PAL_EMPTY_PAGES:
        raise NvsError(
            f"the credentials fill partition {partition_name!r} up to NVS's reserved page: the PKCS#11 PAL has no "
            "room for its own writes (ESP_ERR_NVS_NOT_ENOUGH_SPACE, 0x1105, on the device); enlarge the partition "
            f"by 0x{nvs.PAGE_SIZE:x} or store fewer values"
        )
    return image


def build_credential_image(
    table: PartitionTable,
    credentials: Credentials,
    family: str,
    *,
    partition_label: str = DEFAULT_PARTITION,
    pkcs11_encoding: str = "der",
    extra: Sequence[nvs.NvsEntry] = (),
    encryption_key: bytes | None = None,
    flash_encryption: bool | None = None,
    key_scheme: str = "flash_enc",
) -> CredentialImage:
    """Build the image for the table's NVS partition and prove, by reading it back, what it holds.

    ``flash_encryption`` is the firmware's setting when known (``--project``): it decides whether an NVS
    partition flagged ``encrypted`` can be opened at all. ``key_scheme`` is how the firmware gets the NVS
    keys: ``flash_enc`` from an ``nvs_keys`` partition (which the table must have), ``hmac`` derived from
    an eFuse HMAC key (no partition).
    """
    partition = table.nvs_partition(partition_label)
    if (
        encryption_key is not None
        and key_scheme == "flash_enc"
        and not any(p.type == DATA and p.subtype == SUBTYPES[DATA]["nvs_keys"] for p in table.partitions)
    ):
        raise NvsError(
            f"{table.source}: --encrypt needs an nvs_keys partition in the table: without one the firmware "
            "initialises NVS without keys, cannot read these entries ('failed nvs open 4354') and falls back to "
            "the compiled-in certificate; add 'nvs_keys, data, nvs_keys, , 0x1000, encrypted' or build unencrypted"
        )
    warnings = partition_warnings(partition, flash_encryption)
    if credentials.claim_certificate is not None and not families.get(family).reads_claim_credentials:
        warnings.append(
            f"{family} firmware never reads claim credentials (its PKCS#11 PAL maps no claim label): the image "
            "stores the claim key for nothing"
        )
    entries = credential_entries(credentials, family, pkcs11_encoding=pkcs11_encoding, extra=extra)
    image = build_pal_image(entries, partition.name, partition.size, encryption_key=encryption_key)
    return CredentialImage(image, partition, tuple(entries), credentials.holds_private_key, tuple(warnings))

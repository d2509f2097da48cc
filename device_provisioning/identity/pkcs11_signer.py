"""Code signing with a key in a PKCS#11 token (an HSM, a smart card, SoftHSM2): the key never leaves it.

The key is named by an RFC 7512 URI, ``pkcs11:token=<label>;object=<key label>``, with the PIN in
``PKCS11_PIN`` or in a file only its owner can read (``pin-source=<file>``, mode 0600). ``pin-value=`` is
refused: a PIN on the command line is in ``/proc/<pid>/cmdline`` for every local user and in shell history,
and one in a rollout or batch file is in every copy of it. The module (the vendor's
``.so``) from ``--pkcs11-module``, the URI's ``module-path=`` or ``PKCS11_MODULE``. The token signs the
SHA-256 digest with ``CKM_ECDSA``; its raw ``r || s`` answer is re-encoded as the DER the device reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from device_provisioning.errors import CertificateError, InputFileError

P256_CURVE = "secp256r1"


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI this tool uses."""

    token: str
    object: str
    pin: str | None
    module_path: str | None

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """``pkcs11:token=T;object=K?pin-value=1234``; raises :class:`InputFileError` naming what is missing."""
        if not text.startswith("pkcs11:"):
            raise InputFileError(
                "--pkcs11-uri must start with pkcs11: (RFC 7512), e.g. pkcs11:token=ota;object=codesign"
            )
        body, _, query = text.removeprefix("pkcs11:").partition("?")
        path = dict(_pairs(body, ";"))
        attributes = dict(_pairs(query, "&"))
        if not path.get("token") or not path.get("object"):
            raise InputFileError("--pkcs11-uri needs token=<token label> and object=<key label>")
        if "pin-value" in attributes:
            raise InputFileError(
                "--pkcs11-uri: pin-value= puts the PIN where other users can read it (the process's command line, "
                "shell history, copies of a file); drop it and set PKCS11_PIN, or use pin-source=<file> (mode 0600)"
            )
        pin = None
        if attributes.get("pin-source"):
            pin = _read_pin_file(attributes["pin-source"].removeprefix("file:"))
        return cls(path["token"], path["object"], pin, attributes.get("module-path"))


def _read_pin_file(source: str) -> str:
    """The PIN in ``source``, which only its owner may read (as ssh refuses a group-readable key)."""
    try:
        with open(source, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(4096)
    except OSError as error:
        raise InputFileError(f"--pkcs11-uri pin-source {source}: cannot be read ({error.strerror})") from None
    if mode & 0o077:
        raise InputFileError(
            f"--pkcs11-uri pin-source {source}: readable by group or others (mode {mode & 0o777:04o}); "
            f"chmod 600 {source}"
        )
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise InputFileError(f"--pkcs11-uri pin-source {source}: not a text PIN") from None


def _pairs(text: str, separator: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, text.split(separator)):
        name, equals, value = item.partition("=")
        if not equals:
            raise InputFileError(f"--pkcs11-uri: {unquote(name)!r} has no value")
        pairs.append((unquote(name), unquote(value)))
    return pairs


@dataclass(frozen=True)
class Pkcs11Signer:
    """A token's P-256 key as a :class:`~device_provisioning.identity.signers.CodeSigner`."""

    session: Any
    key: Any
    public: ec.EllipticCurvePublicKey
    label: str

    @property
    def description(self) -> str:
        return f"PKCS#11 key {self.label!r}"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.public

    def sign_digest(self, digest: bytes) -> bytes:
        import pkcs11
        from pkcs11.util.ec import encode_ecdsa_signature

        raw = self.key.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
        return bytes(encode_ecdsa_signature(raw))

    def close(self) -> None:
        self.session.close()


def open_signer(uri_text: str, *, module: str | None = None, generate: bool = False) -> Pkcs11Signer:
    """Open the token and find (or, with ``generate``, create) the P-256 key the URI names.

    Raises :class:`InputFileError` for a missing module, token, PIN or key and :class:`CertificateError`
    for a key that is not P-256.
    """
    import pkcs11
    from pkcs11.exceptions import PKCS11Error
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    uri = Pkcs11Uri.parse(uri_text)
    module_path = module or uri.module_path or os.environ.get("PKCS11_MODULE")
    if not module_path:
        raise InputFileError("no PKCS#11 module: pass --pkcs11-module PATH (the token's .so) or set PKCS11_MODULE")
    if not Path(module_path).is_file():
        raise InputFileError(f"PKCS#11 module {module_path}: no such file")
    pin = uri.pin or os.environ.get("PKCS11_PIN")
    if not pin:
        raise InputFileError("no PIN for the token: set PKCS11_PIN, or put pin-source=<file> (mode 0600) in the URI")
    try:
        library = pkcs11.lib(module_path)
    except (RuntimeError, OSError, PKCS11Error):
        raise InputFileError(f"PKCS#11 module {module_path}: cannot be loaded as a PKCS#11 library") from None
    try:
        token = library.get_token(token_label=uri.token)
    except (pkcs11.NoSuchToken, PKCS11Error) as error:
        raise InputFileError(
            f"PKCS#11 token {uri.token!r}: not found in {module_path} ({type(error).__name__})"
        ) from None
    try:
        session = token.open(user_pin=pin, rw=generate)
    except PKCS11Error as error:
        raise InputFileError(
            f"PKCS#11 token {uri.token!r}: cannot log in ({type(error).__name__}); check the PIN"
        ) from None
    try:
        if generate:
            if list(session.get_objects({pkcs11.Attribute.LABEL: uri.object})):
                raise InputFileError(f"token {uri.token!r} already holds an object {uri.object!r}; drop --generate")
            parameters = session.create_domain_parameters(
                pkcs11.KeyType.EC, {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters(P256_CURVE)}, local=True
            )
            # The private key never leaves the token: not readable in clear (SENSITIVE), not exportable even
            # wrapped (EXTRACTABLE false), so no copy of it can ever exist outside.
            public_object, private_object = parameters.generate_keypair(
                store=True,
                label=uri.object,
                private_template={
                    pkcs11.Attribute.SENSITIVE: True,
                    pkcs11.Attribute.EXTRACTABLE: False,
                    pkcs11.Attribute.SIGN: True,
                },
            )
        else:
            private_object = _one_key(session, pkcs11.ObjectClass.PRIVATE_KEY, uri)
            public_object = _one_key(session, pkcs11.ObjectClass.PUBLIC_KEY, uri)
        if private_object.key_type != pkcs11.KeyType.EC:
            raise CertificateError(
                f"PKCS#11 key {uri.object!r} is {private_object.key_type.name}; ESP32 OTA verifies ECDSA P-256 only"
            )
        public = serialization.load_der_public_key(encode_ec_public_key(public_object))
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise CertificateError(
                f"PKCS#11 key {uri.object!r} is not an EC P-256 key; ESP32 OTA verifies ECDSA P-256 only"
            )
        return Pkcs11Signer(session, private_object, public, uri.object)
    except BaseException:
        session.close()
        raise


def _one_key(session: Any, object_class: Any, uri: Pkcs11Uri) -> Any:
    import pkcs11

    try:
        return session.get_key(object_class=object_class, label=uri.object)
    except pkcs11.NoSuchKey:
        raise InputFileError(
            f"token {uri.token!r} holds no {object_class.name.lower().replace('_', ' ')} {uri.object!r}; "
            "check object= in the URI, or create it with --generate"
        ) from None
    except pkcs11.MultipleObjectsReturned:
        raise InputFileError(f"token {uri.token!r} holds several keys labelled {uri.object!r}") from None

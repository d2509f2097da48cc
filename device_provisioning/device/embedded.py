"""The ``embedded`` firmware family: stock master/LTS OTA demos compile the certificate in.

Their OTA PAL gets the PEM from ``main/certs/aws_codesign.crt`` (embedded as NUL-terminated text)
and never reads NVS, so provisioning means writing that file and rebuilding the firmware.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from device_provisioning.errors import InputFileError
from device_provisioning.files import read_bytes, write_atomic
from device_provisioning.identity import pki

EMBEDDED_CERT_PATH = Path("main") / "certs" / "aws_codesign.crt"


@dataclass(frozen=True)
class InstalledCertificate:
    """Where ``install_embedded`` wrote the certificate, the backup it made, and its fingerprint."""

    path: Path
    backup: Path | None
    fingerprint: str


def install_embedded(project_dir: str | Path, certificate: x509.Certificate) -> InstalledCertificate:
    """Write the PEM where the firmware embeds it, backing up a different existing file."""
    project = Path(project_dir)
    if not (project / "main").is_dir():
        raise InputFileError(
            f"{project}: no main/ directory; give the ESP-IDF firmware project (the folder with CMakeLists.txt)"
        )
    target = project / EMBEDDED_CERT_PATH
    pem = pki.certificate_pem(certificate)
    backup = None
    if target.exists() and not target.is_file():
        raise InputFileError(f"{target}: not a file (a directory?); move it away, then install the certificate again")
    if target.exists():
        if read_bytes(target, "embedded certificate") == pem:
            return InstalledCertificate(target, None, pki.fingerprint(certificate))
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = target.with_name(f"{target.name}.{stamp}.bak")
        shutil.copy2(target, backup)
    write_atomic(target, pem)
    return InstalledCertificate(target, backup, pki.fingerprint(certificate))

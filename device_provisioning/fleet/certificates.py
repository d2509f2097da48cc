"""The device certificates of a fleet by expiry: which devices will stop connecting, and when.

AWS IoT refuses a TLS connection with a certificate past its ``notAfter``, and a device cannot renew it once it
cannot connect. The expiry is read from each certificate itself (``DescribeCertificate``'s PEM, the X.509
``notAfter``), the certificates from each thing's principals (``ListThingPrincipals``): two calls per device,
which no AWS IoT call batches (``ListCertificates`` carries no validity, and the fleet index no principals).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

# AWS's largest page of ListThingPrincipals.
PRINCIPALS_PAGE = 250
DAY_SECONDS = 86400


@dataclass(frozen=True)
class ThingCertificate:
    """One certificate attached to one thing, with the end of its validity."""

    thing: str
    certificate_id: str
    status: str
    not_after: dt.datetime

    def days_left(self, now: dt.datetime) -> float:
        """Days until ``not_after`` (negative once expired)."""
        return (self.not_after - now).total_seconds() / DAY_SECONDS

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "thing": self.thing,
            "certificate_id": self.certificate_id,
            "status": self.status,
            "not_after": self.not_after.isoformat(),
            "days_left": round(self.days_left(now), 1),
        }


def thing_certificates(iot: Any, things: Iterable[str]) -> list[ThingCertificate]:
    """Every certificate attached to these things (a thing may hold several, a certificate serve several)."""
    described: dict[str, tuple[str, dt.datetime]] = {}
    found = []
    for thing in things:
        pages = iot.get_paginator("list_thing_principals").paginate(
            thingName=thing, PaginationConfig={"PageSize": PRINCIPALS_PAGE}
        )
        for principal in (p for page in pages for p in page.get("principals", [])):
            if ":cert/" not in principal:
                continue  # a Cognito identity or another principal has no certificate to expire
            certificate_id = principal.rsplit("/", 1)[-1]
            if certificate_id not in described:
                described[certificate_id] = _status_and_expiry(iot, certificate_id)
            status, not_after = described[certificate_id]
            found.append(ThingCertificate(thing, certificate_id, status, not_after))
    return found


def _status_and_expiry(iot: Any, certificate_id: str) -> tuple[str, dt.datetime]:
    description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    certificate = x509.load_pem_x509_certificate(description["certificatePem"].encode())
    return str(description.get("status", "")), certificate.not_valid_after_utc


def by_expiry(
    certificates: Sequence[ThingCertificate], now: dt.datetime, within_days: float | None = None
) -> list[ThingCertificate]:
    """Soonest expiry first; with ``within_days``, only those ending within that many days (expired ones too)."""
    chosen = [c for c in certificates if within_days is None or c.days_left(now) <= within_days]
    return sorted(chosen, key=lambda c: (c.not_after, c.thing, c.certificate_id))

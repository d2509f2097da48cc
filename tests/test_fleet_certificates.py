"""`fleet show --certificates`: the devices' certificates by expiry, on the local endpoint over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device_provisioning import aws
from device_provisioning.fleet import certificates
from tests.cli_helpers import run as cli

NOW = dt.datetime.now(dt.UTC)


def certificate_pem(thing: str, days: float) -> str:
    """A device certificate ending ``days`` from now (negative: already expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing)])
    end = NOW + dt.timedelta(days=days)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(end - dt.timedelta(days=400))
        .not_valid_after(end).sign(key, hashes.SHA256())
    )  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def fleet(local_endpoint) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """A group of four things: certificates ending in 400, 20 and -3 days, one thing with two, one with none."""
    iot = aws.connect().client("iot")
    group = f"dev-certs-{uuid.uuid4().hex[:6]}"
    iot.create_thing_group(thingGroupName=group)
    ends = {"long": [400], "soon": [20], "expired": [-3], "rotating": [200, 5], "bare": []}
    ids: dict[str, list[str]] = {}
    for suffix, days in ends.items():
        thing = f"{group}-{suffix}"
        iot.create_thing(thingName=thing)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
        for end in days:
            made = iot.register_certificate_without_ca(certificatePem=certificate_pem(thing, end), status="ACTIVE")
            iot.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
            ids.setdefault(suffix, []).append(made["certificateId"])
    return {"group": group, "ids": ids}


def test_certificates_are_listed_soonest_first_with_their_days_left(fleet: dict) -> None:  # type: ignore[type-arg]
    group = fleet["group"]
    code, out, err = cli("fleet", "show", "--group", group, "--certificates", "--json")
    assert code == 0, err
    listed = json.loads(out)["certificates"]
    assert [(c["thing"].removeprefix(f"{group}-"), round(c["days_left"])) for c in listed] == [
        ("expired", -3), ("rotating", 5), ("soon", 20), ("rotating", 200), ("long", 400),
    ]  # fmt: skip
    assert {c["certificate_id"] for c in listed} == {i for ids in fleet["ids"].values() for i in ids}  # type: ignore[attr-defined]
    assert all(c["status"] == "ACTIVE" for c in listed)
    code, out, err = cli("fleet", "show", "--group", group, "--certificates")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith(f"{group}-expired") and "EXPIRED" in lines[1] and lines[-1].startswith("5 certificate")


def test_expiring_within_keeps_those_ending_within_the_days_expired_ones_included(fleet: dict) -> None:  # type: ignore[type-arg]
    group = fleet["group"]
    code, out, err = cli("fleet", "show", "--group", group, "--expiring-within", "30", "--json")
    assert code == 0, err
    listed = json.loads(out)["certificates"]
    assert [c["thing"].removeprefix(f"{group}-") for c in listed] == ["expired", "rotating", "soon"]
    code, out, err = cli("fleet", "show", "--group", group, "--expiring-within", "1", "--json")
    assert [c["thing"].removeprefix(f"{group}-") for c in json.loads(out)["certificates"]] == ["expired"]


@pytest.mark.parametrize("value", ["-1", "soon", "", "100000"])
def test_expiring_within_refuses_what_is_not_a_number_of_days_in_one_line(value: str) -> None:
    code, out, err = cli("fleet", "show", "--expiring-within", value)
    assert code != 0 and "--expiring-within" in err and "Traceback" not in err and not out


def test_by_expiry_filters_and_orders_without_aws() -> None:
    made = [
        certificates.ThingCertificate("b", "2", "ACTIVE", NOW + dt.timedelta(days=10)),
        certificates.ThingCertificate("a", "1", "INACTIVE", NOW - dt.timedelta(days=1)),
        certificates.ThingCertificate("c", "3", "ACTIVE", NOW + dt.timedelta(days=90)),
    ]
    assert [c.thing for c in certificates.by_expiry(made, NOW)] == ["a", "b", "c"]
    assert [c.thing for c in certificates.by_expiry(made, NOW, 10)] == ["a", "b"]
    assert [c.thing for c in certificates.by_expiry(made, NOW, 0)] == ["a"]

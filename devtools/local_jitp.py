"""The factory CA on the local endpoint: ``AWS::IoT::CACertificate`` in CloudFormation, and JITP.

moto's CloudFormation has no ``AWS::IoT::CACertificate``: :class:`LocalCaCertificate` registers the CA
from a stack as AWS documents the resource (``CACertificatePem``, ``Status``, ``AutoRegistrationStatus``,
``RegistrationConfig``; ``Id``/``Arn`` for ``Fn::GetAtt``).

Just-in-time provisioning happens inside AWS IoT's TLS endpoint, not in an API: :func:`device_connects`
stands in for a device's first connection, as AWS's JITP guide describes it. The certificate must verify
against a registered CA that is ACTIVE with auto-registration on; AWS IoT registers it
(``PENDING_ACTIVATION``), refuses that first connection, and runs the CA's template with the
certificate's subject fields as parameters: the thing (named and attributed from the subject), the
certificate's status, the policy attached to it and the certificate attached to the thing. What this
cannot show: the TLS handshake and its SNI (``SNI_ONLY`` mode), the registration role's permissions being
evaluated, the ``$aws/events/certificates/registered/<caCertificateId>`` message, and AWS's timing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from moto.cloudformation import parsing
from moto.core.common_models import CloudFormationModel
from moto.iot.models import iot_backends

# moto's fixed account, and the local endpoint's region (devtools.local_aws).
ACCOUNT, REGION = "123456789012", "us-east-1"

# The certificate fields a JITP template may use (AWS IoT developer guide, "Just-in-time provisioning").
_SUBJECT_PARAMETERS = {
    "AWS::IoT::Certificate::Country": NameOID.COUNTRY_NAME,
    "AWS::IoT::Certificate::Organization": NameOID.ORGANIZATION_NAME,
    "AWS::IoT::Certificate::OrganizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "AWS::IoT::Certificate::DistinguishedNameQualifier": NameOID.DN_QUALIFIER,
    "AWS::IoT::Certificate::StateName": NameOID.STATE_OR_PROVINCE_NAME,
    "AWS::IoT::Certificate::CommonName": NameOID.COMMON_NAME,
    "AWS::IoT::Certificate::SerialNumber": NameOID.SERIAL_NUMBER,
}


class LocalCaCertificate(CloudFormationModel):
    """``AWS::IoT::CACertificate`` for moto's CloudFormation."""

    def __init__(self, certificate: Any, auto_registration: str) -> None:
        self.certificate = certificate
        self.auto_registration = auto_registration

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::IoT::CACertificate"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in ("Arn", "Id")

    @property
    def physical_resource_id(self) -> str:
        return str(self.certificate.certificate_id)

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        return self.certificate.arn if attribute_name == "Arn" else self.certificate.certificate_id

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> LocalCaCertificate:
        properties = cloudformation_json["Properties"]
        config = properties.get("RegistrationConfig") or {}
        backend = iot_backends[account_id][region_name]
        certificate = backend.register_ca_certificate(
            ca_certificate=properties["CACertificatePem"],
            set_as_active=properties.get("Status") == "ACTIVE",
            registration_config={
                key: value
                for key, value in (("templateBody", config.get("TemplateBody")), ("roleArn", config.get("RoleArn")))
                if value
            },
        )
        # moto's model has no place for these: kept beside it, as AWS keeps them on the CA.
        auto_registration = str(properties.get("AutoRegistrationStatus", "DISABLE"))
        setattr(certificate, "auto_registration_status", auto_registration)  # noqa: B010
        setattr(certificate, "certificate_mode", properties.get("CertificateMode", "DEFAULT"))  # noqa: B010
        return cls(certificate, auto_registration)


def add_ca_certificate_resource() -> None:
    """Make moto's CloudFormation know the resource (its model map is built once and cached)."""
    parsing.get_model_map.cache_clear()


@dataclass(frozen=True)
class JitpOutcome:
    """What AWS IoT did on the device's first connection (which it refused: the device reconnects)."""

    certificate_id: str
    thing_name: str
    policy_name: str
    status: str


class ConnectionRefused(Exception):
    """AWS IoT closed the TLS connection without provisioning (the reason, as its logs would say)."""


def _resolve(node: Any, parameters: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return parameters[node["Ref"]]
        return {key: _resolve(value, parameters) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item, parameters) for item in node]
    return node


def device_connects(certificate_pem: str, *, account: str = ACCOUNT, region: str = REGION) -> JitpOutcome:
    """A device's first TLS connection with a certificate AWS IoT has never seen (JITP)."""
    backend = iot_backends[account][region]
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    now = dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ConnectionRefused("the certificate is outside its validity")
    for ca_record in backend.ca_certificates.values():
        ca = x509.load_pem_x509_certificate(ca_record.certificate_pem.encode())
        try:
            certificate.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):
            continue
        break
    else:
        raise ConnectionRefused("no registered CA signed this certificate")
    if ca_record.status != "ACTIVE" or getattr(ca_record, "auto_registration_status", "DISABLE") != "ENABLE":
        raise ConnectionRefused("the CA is not ACTIVE with auto-registration enabled")
    registered = backend.register_certificate(
        certificate_pem, ca_record.certificate_pem, set_as_active=False, status="PENDING_ACTIVATION"
    )
    # AWS names a certificate by the SHA-256 of its DER (moto, by default, of its PEM text).
    del backend.certificates[registered.certificate_id]
    registered.certificate_id = registered.compute_der_cert_id(certificate_pem)
    registered.arn = f"arn:aws:iot:{region}:{account}:cert/{registered.certificate_id}"
    backend.certificates[registered.certificate_id] = registered
    template_body = ca_record.registration_config.get("templateBody")
    if not template_body:  # auto-registration alone: a rule or a Lambda would activate it
        return JitpOutcome(registered.certificate_id, "", "", registered.status)
    template = json.loads(template_body)
    parameters = {"AWS::IoT::Certificate::Id": registered.certificate_id}
    for name, oid in _SUBJECT_PARAMETERS.items():
        values = certificate.subject.get_attributes_for_oid(oid)
        if values:
            parameters[name] = str(values[0].value)
    for name, declaration in template.get("Parameters", {}).items():
        if name not in parameters:
            if "Default" not in declaration:
                raise ConnectionRefused(f"the template needs {name}, which the certificate does not hold")
            parameters[name] = declaration["Default"]
    resources = _resolve(template["Resources"], parameters)
    thing = next(r for r in resources.values() if r["Type"] == "AWS::IoT::Thing")["Properties"]
    status = next(r for r in resources.values() if r["Type"] == "AWS::IoT::Certificate")["Properties"]["Status"]
    policy = next(r for r in resources.values() if r["Type"] == "AWS::IoT::Policy")["Properties"]["PolicyName"]
    attributes = {"attributes": thing.get("AttributePayload") or {}}
    backend.create_thing(thing["ThingName"], thing.get("ThingTypeName"), attributes)
    backend.update_certificate(registered.certificate_id, status)
    backend.attach_policy(policy, registered.arn)
    backend.attach_thing_principal(thing["ThingName"], registered.arn)
    return JitpOutcome(registered.certificate_id, thing["ThingName"], policy, status)

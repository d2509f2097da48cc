"""The factory CA, registered in AWS IoT with a just-in-time provisioning (JITP) template.

Stations sign each device's certificate with the CA (its key in AWS KMS or a PKCS#11 token, never on a
station disk) and make no AWS call per device. On the device's first TLS connection AWS IoT finds the
CA, registers the certificate (PENDING_ACTIVATION) and runs this template: a thing named by the
certificate's common name, with the inventory the CA signed into its subject, the certificate ACTIVE and
attached to the thing, and the stage's device policy attached. The device then reconnects as that thing.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import aws_iot as iot
from constructs import Construct

from device_provisioning import contract
from stacks.registration_role import registration_role


def jitp_template(device_policy_name: str, thing_type_name: str) -> dict[str, Any]:
    """The JITP template body (AWS's documented format: certificate parameters only)."""
    return {
        "Parameters": {
            contract.JITP_THING_NAME_PARAMETER: {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"},
            **{
                parameter: {"Type": "String", "Default": ""}
                for parameter in contract.JITP_INVENTORY_PARAMETERS.values()
            },
        },
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Ref": contract.JITP_THING_NAME_PARAMETER},
                    # The stage's thing type: an untyped thing holds three attributes, the inventory more.
                    "ThingTypeName": thing_type_name,
                    "AttributePayload": {
                        attribute: {"Ref": parameter}
                        for attribute, parameter in contract.JITP_INVENTORY_PARAMETERS.items()
                    },
                },
                "OverrideSettings": {
                    "AttributePayload": "REPLACE",
                    "ThingTypeName": "REPLACE",
                    "ThingGroups": "DO_NOTHING",
                },
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"},
            },
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": device_policy_name}},
        },
    }


class FactoryCa(Construct):
    """``AWS::IoT::CACertificate`` (ACTIVE, auto-registration on) + the JITP template and its role."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        ca_certificate_pem: str,
        verification_certificate_pem: str | None,
        device_policy_name: str,
        thing_type_name: str,
        thing_name_prefix: str,
    ) -> None:
        super().__init__(scope, id_)
        self.role = registration_role(
            self,
            "RegistrationRole",
            thing_name_prefix=thing_name_prefix,
            description="AWS IoT just-in-time provisioning of the factory CA's devices",
        )
        self.template = jitp_template(device_policy_name, thing_type_name)
        self.certificate = iot.CfnCACertificate(
            self,
            "Certificate",
            ca_certificate_pem=ca_certificate_pem,
            # DEFAULT proves the CA's key to AWS (a verification certificate over the account's registration
            # code); SNI_ONLY registers without that proof, and devices must then send SNI (ESP-TLS does).
            certificate_mode="DEFAULT" if verification_certificate_pem else "SNI_ONLY",
            verification_certificate_pem=verification_certificate_pem,
            status="ACTIVE",
            auto_registration_status="ENABLE",
            registration_config=iot.CfnCACertificate.RegistrationConfigProperty(
                role_arn=self.role.role_arn, template_body=json.dumps(self.template)
            ),
        )

"""The cloud side of ``doctor``: what AWS IoT knows about the device, checked against what its firmware needs.

The thing exists; it holds a certificate that is ACTIVE; a policy attached to that certificate lets
it connect with its thing name as client id and subscribe to its jobs topics (evaluated on the IoT
policy documents, policy variables included); its job executions' status details are decoded like
the log lines a device prints. Findings use the same shape and codes as the log rules.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any

from device_provisioning import signing
from device_provisioning.aws.codesign import read_signing_profile
from device_provisioning.aws.session import Aws, aws_errors
from device_provisioning.doctor.reader import printable
from device_provisioning.doctor.rules import Diagnosis, job_status_reason
from device_provisioning.identity import pki

# What the OTA agent does on its connection, as (action, resource type, resource name) for thing T.
NEEDED = (
    ("iot:Connect", "client", "{thing}"),
    ("iot:Subscribe", "topicfilter", "$aws/things/{thing}/jobs/notify-next"),
    ("iot:Publish", "topic", "$aws/things/{thing}/jobs/$next/get"),
)


def _strings(value: object) -> list[str]:
    """A policy field that may be one string or a list of them; anything else holds none."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _statements(document: object) -> list[dict[str, Any]]:
    """The statements of a policy document (one object or a list, as IAM grammar allows)."""
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    statements = [statements] if isinstance(statements, dict) else statements
    return [s for s in statements if isinstance(s, dict)] if isinstance(statements, list) else []


def _allows(document: object, action: str, resource: str, thing: str) -> bool:
    """Does an IoT policy document allow ``action`` on ``resource`` for this thing (no Deny evaluated away)?"""
    allowed = False
    for statement in _statements(document):
        actions = _strings(statement.get("Action", []))
        resources = _strings(statement.get("Resource", []))
        if not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        patterns = [
            r.replace("${iot:Connection.Thing.ThingName}", thing).replace("${iot:ClientId}", thing) for r in resources
        ]
        if any(fnmatch.fnmatchcase(resource, pattern) for pattern in patterns):
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
    return allowed


def check_thing(aws: Aws, thing: str) -> list[Diagnosis]:
    """Cloud-side findings for ``thing``; an empty list when everything the firmware needs is in place.

    An answer that is not what AWS documents (a field missing or of another type) ends the check as
    one finding naming it, never as a traceback.
    """
    found: list[Diagnosis] = []
    try:
        return _check_thing(aws, thing, found)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as error:
        found.append(
            Diagnosis(
                "cloud-answer-unexpected",
                0,
                f"AWS IoT: thing {thing}",
                printable(
                    f"an AWS IoT answer is not what AWS documents ({type(error).__name__}: {error}); the checks "
                    "after it were not made"
                ),
                "check --endpoint-url/AWS_ENDPOINT_URL points at AWS IoT (or a faithful stand-in) and run again",
            )
        )
        return found


def _check_thing(aws: Aws, thing: str, found: list[Diagnosis]) -> list[Diagnosis]:
    iot = aws.client("iot")

    def finding(code: str, explanation: str, fix: str) -> None:
        found.append(Diagnosis(code, 0, f"AWS IoT: thing {thing}", explanation, fix))

    with aws_errors(f"checking thing {thing} on AWS IoT"):
        try:
            iot.describe_thing(thingName=thing)
        except iot.exceptions.ResourceNotFoundException:
            finding(
                "thing-missing",
                f"there is no thing {thing!r} in this account and region",
                "device-provisioning device register NAME (or check --region / the endpoint)",
            )
            return found
        principals = [
            p
            for page in iot.get_paginator("list_thing_principals").paginate(thingName=thing)
            for p in page.get("principals", [])
            if ":cert/" in p
        ]
        if not principals:
            finding(
                "no-certificate",
                "no certificate is attached to the thing: the device cannot connect as it",
                "device-provisioning device register NAME --out DIR attaches one",
            )
        active = []
        for arn in principals:
            answer = iot.describe_certificate(certificateId=arn.rsplit("/", 1)[1])
            description = answer.get("certificateDescription") or {}
            if description.get("status") != "ACTIVE":
                finding(
                    "certificate-not-active",
                    f"certificate {arn.rsplit('/', 1)[1][:12]} is {description.get('status')}: the broker "
                    "closes the TLS handshake (-0x7280 / -0x7780 in the device log)",
                    "aws iot update-certificate --new-status ACTIVE (if it is the device's) or register again",
                )
            else:
                active.append(arn)
        region, account = aws.region, _account_of(principals)
        for arn in active:
            documents = []
            for page in iot.get_paginator("list_attached_policies").paginate(target=arn):
                for policy in page.get("policies", []):
                    name = policy.get("policyName", "?")
                    text = iot.get_policy(policyName=name).get("policyDocument")
                    try:
                        documents.append(json.loads(text) if isinstance(text, str) else None)
                    except ValueError:
                        documents.append(None)
                    if not isinstance(documents[-1], dict):
                        finding(
                            "policy-document-unreadable",
                            f"policy {name!r} attached to the thing's certificate is not a JSON policy document "
                            f"as AWS IoT documents it (it starts {printable(str(text))[:40]!r}): its permissions "
                            "cannot be judged, and AWS IoT would not have accepted it",
                            f"aws iot get-policy --policy-name {name}; replace it with the DeviceFleet stack's "
                            "device policy (aws iot create-policy-version --set-as-default)",
                        )
            if not all(isinstance(document, dict) for document in documents):
                continue  # what an unreadable policy allows cannot be judged: its finding says so
            for action, kind, name in NEEDED:
                resource = f"arn:aws:iot:{region}:{account}:{kind}/{name.format(thing=thing)}"
                if not any(_allows(document, action, resource, thing) for document in documents):
                    finding(
                        f"policy-denies-{action.split(':')[1].lower()}",
                        f"no policy attached to certificate {arn.rsplit('/', 1)[1][:12]} allows {action} on "
                        f"{kind}/{name.format(thing=thing)}: the broker closes the connection (-0x7880, "
                        "MQTTRecvFailed) or refuses the subscription",
                        "attach the DeviceFleet stack's device policy (its output DevicePolicyName) to the certificate",
                    )
        pages = iot.get_paginator("list_job_executions_for_thing").paginate(thingName=thing)
        for summary in (s for page in pages for s in page.get("executionSummaries", [])):
            if (summary.get("jobExecutionSummary") or {}).get("status") not in ("FAILED", "REJECTED", "TIMED_OUT"):
                continue
            execution = iot.describe_job_execution(jobId=summary["jobId"], thingName=thing).get("execution") or {}
            details = (execution.get("statusDetails") or {}).get("detailsMap") or {}
            decoded = job_status_reason(json.dumps(details))
            if decoded:
                code, explanation, fix = decoded
                finding(code, f"job {summary['jobId']}: {explanation}", fix)
            else:
                finding(
                    "job-execution-failed",
                    printable(f"job {summary['jobId']} ended {execution.get('status')}: {details}"),
                    "device-provisioning ota status JOB --json",
                )
    return found


@dataclass(frozen=True)
class HeldCertificate:
    """The code-verification certificate a device holds, and where that is recorded."""

    fingerprint: str
    source: str


def held_in_image(image: bytes, family: str, source: str) -> HeldCertificate:
    """The P11_CSK of an NVS image (as read back from the device, or as built for it)."""
    found = signing.certificate_from_nvs(image, family, source=source)
    return HeldCertificate(pki.fingerprint(found.certificate), found.origin)


def check_signing_profile(aws: Aws, profile_name: str, held: HeldCertificate) -> list[Diagnosis]:
    """Does the Signer profile sign with the certificate the device verifies with?"""
    profile = read_signing_profile(aws, profile_name)
    signs_with = pki.fingerprint(profile.certificate)
    if signs_with == held.fingerprint:
        return []
    return [
        Diagnosis(
            "signing-profile-certificate-mismatch",
            0,
            f"AWS Signer: profile {profile_name}",
            f"profile {profile_name} signs with certificate SHA-256 {signs_with[:16]}... ({profile.certificate_arn}) "
            f"but the device holds {held.fingerprint[:16]}... ({held.source}): every image signed with this "
            "profile fails the device's check (OtaPalSignatureCheckFailed, 0xe3000000)",
            "sign with the profile whose certificate the devices hold, or give the devices this certificate "
            "(device-provisioning nvs build --code-verify-cert ..., then device-provisioning flash --no-firmware)",
        )
    ]


def _account_of(certificate_arns: list[str]) -> str:
    return certificate_arns[0].split(":")[4] if certificate_arns else "*"

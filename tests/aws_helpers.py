"""Helpers of the AWS tests on the project's local endpoint: a device policy document, unique names, the
versions of a bucket's objects."""

from __future__ import annotations

import json
import uuid

from device_provisioning import aws

POLICY_DOCUMENT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}",
            }
        ],
    }
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def object_versions(session: aws.Aws, bucket: str) -> list[str]:
    return [v["VersionId"] for v in session.client("s3").list_object_versions(Bucket=bucket).get("Versions", [])]

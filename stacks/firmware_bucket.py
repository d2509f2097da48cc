"""Versioned, locked-down S3 bucket for OTA firmware, with its access-log bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.nag import skip_checkov


class FirmwareBucket(Construct):
    """The bucket OTA updates read firmware from, plus a separate server-access-log bucket."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        noncurrent_version_expiration: Duration,
        access_log_retention: Duration,
        retain_on_delete: bool,
    ) -> None:
        super().__init__(scope, id_)
        removal = RemovalPolicy.RETAIN if retain_on_delete else RemovalPolicy.DESTROY

        # Access logs need SSE-S3 (the log delivery service cannot write SSE-KMS objects).
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            # Versioned, so a deleted or overwritten log object can still be read in an investigation.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=access_log_retention,
                    noncurrent_version_expiration=access_log_retention,
                )
            ],
            removal_policy=removal,
        )
        skip_checkov(
            self.access_log_bucket,
            {
                "CKV_AWS_18": "this bucket receives the firmware bucket's access logs; logging its own access would "
                "write into itself (or need a third bucket); it is versioned and private instead"
            },
        )

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            # OTA jobs name an object *version*: without versioning CreateOTAUpdate refuses the file.
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="firmware-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireOldFirmwareVersions",
                    # Old versions stay long enough for devices still running an older job.
                    noncurrent_version_expiration=noncurrent_version_expiration,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=removal,
        )

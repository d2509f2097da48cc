"""AWS IoT fleet indexing (registry), opt-in because the indexing configuration is account-wide.

CloudFormation has no resource for the indexing configuration, so a custom resource calls
``UpdateIndexingConfiguration`` on create and update: thing indexing ``REGISTRY`` (attributes and
thing group names), with the inventory attributes as custom fields so that GetBucketsAggregation can count
cohorts and rollout buckets. Deleting the stack leaves indexing on (another stage or tool of the account
may rely on it; turning it off deletes the index). Enable it in one stage per account:
``-c fleetIndexing=true``.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import custom_resources as cr
from constructs import Construct

from device_provisioning.fleet.index import CUSTOM_FIELDS
from stacks.nag import (
    acknowledge_managed_policies,
    acknowledge_wildcard_resources,
    ignore_redundant_role_dependency,
    skip_checkov,
)

# The id CDK gives the one Lambda function behind every AwsCustomResource of a stack.
CUSTOM_RESOURCE_PROVIDER_ID = "AWS679f53fac002430cb0da5b7982bd2287"


class FleetIndexing(Construct):
    """Thing indexing REGISTRY with the inventory's custom fields (a custom resource, account-wide)."""

    def __init__(self, scope: Construct, id_: str) -> None:
        super().__init__(scope, id_)
        call = cr.AwsSdkCall(
            service="Iot",
            action="updateIndexingConfiguration",
            parameters={
                "thingIndexingConfiguration": {
                    "thingIndexingMode": "REGISTRY",
                    "customFields": [dict(field) for field in CUSTOM_FIELDS],
                }
            },
            physical_resource_id=cr.PhysicalResourceId.of("thing-indexing-registry"),
        )
        # UpdateIndexingConfiguration has no resource-level permission: IAM takes it on "*" only.
        self.resource = cr.AwsCustomResource(
            self,
            "Configuration",
            on_create=call,
            on_update=call,
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE),
            install_latest_aws_sdk=False,
        )
        acknowledge_wildcard_resources(
            self.resource,
            ["*"],
            "iot:UpdateIndexingConfiguration has no resource-level permission (the configuration is the account's)",
        )
        provider = Stack.of(self).node.find_child(CUSTOM_RESOURCE_PROVIDER_ID)
        basic_execution = iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaBasicExecutionRole")
        acknowledge_managed_policies(
            provider.node.find_child("ServiceRole"),
            [basic_execution.managed_policy_arn],
            "CDK's custom-resource provider writes only its own logs; the managed policy is CDK's, for that",
        )
        ignore_redundant_role_dependency(provider)
        skip_checkov(
            provider,
            {
                "CKV_AWS_116": "CloudFormation invokes the provider synchronously and reports its failure itself",
                "CKV_AWS_117": "the provider calls only the AWS IoT API; a VPC would add NAT costs and no isolation",
                "CKV_AWS_115": "it runs once per deployment; reserved concurrency would take from the account's pool",
                "CKV_AWS_173": "the provider has no environment variables of ours, no secrets",
            },
        )

"""The AWS side: sessions and errors (``session``), ACM and Signer (``codesign``), device registration
(``registration``) and OTA updates (``ota``).

The session API is re-exported here, so ``from device_provisioning import aws; aws.connect()`` reads as it says.
"""

from device_provisioning.aws.session import (
    STACK_VALUES,
    Aws,
    RetrySettings,
    aws_errors,
    connect,
    error_code,
    explain,
    stack_values,
)
from device_provisioning.errors import AwsError

__all__ = [
    "STACK_VALUES",
    "Aws",
    "AwsError",
    "RetrySettings",
    "aws_errors",
    "connect",
    "error_code",
    "explain",
    "stack_values",
]

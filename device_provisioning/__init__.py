"""esp-ota-provisioning, device and factory side: a library first, with a thin CLI over it.

Packages, one concern each (docs/architecture.md has every module):

- ``identity``: the code-signing key and certificate (key files, PKCS#11 tokens; AWS KMS in ``aws``), device TLS
  keys and CSRs, a factory CA; ``rotation`` (a module): certificate rotation plans.
- ``device``: the firmware project (``--project``), partition tables, NVS images and which entries each firmware
  family reads, app images, embedded certificates, ESP-IDF build directories, the OTA agent's limits.
- ``signing`` (a module): sign as AWS Signer does; verify as the device will.
- ``flashing``: what to write where, esptool (the only serial access) and the proof of what landed, merged
  factory images.
- ``aws``: sessions and AWS errors, device registration, the Signer/ACM side, OTA updates and their pre-flight.
- ``fleet``: the fleet inventory on each thing, cohort pre-flights, per-device status; ``rollout``: staged
  rollouts.
- ``factory``: batches (journal, crash-safe registration, bulk registration, several stations), flashing
  stations and the operator's page.
- ``doctor``: device-log diagnosis.
- ``errors``: the one error hierarchy (``ProvisioningError`` and subclasses, ``ExitCode``); ``cli``: the command
  line. The local AWS endpoint and the demo live in the repository's ``devtools/``, not in the installed package.
"""

__version__ = "0.2.0"

from device_provisioning.errors import (
    AwsError,
    CertificateError,
    DeviceError,
    ExitCode,
    FlashPlanError,
    InputFileError,
    NvsError,
    PartitionTableError,
    ProvisioningError,
    SignatureError,
    VerificationFailed,
    WriteFailed,
)

__all__ = [
    "__version__",
    "AwsError",
    "CertificateError",
    "DeviceError",
    "ExitCode",
    "FlashPlanError",
    "InputFileError",
    "NvsError",
    "PartitionTableError",
    "ProvisioningError",
    "SignatureError",
    "VerificationFailed",
    "WriteFailed",
]

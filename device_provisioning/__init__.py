"""esp-ota-provisioning, device and factory side: a library first, with a thin CLI over it.

Modules, one concern each:

- ``codesign``: the ECDSA P-256 code-signing key and certificate (create, CSR, load, check).
- ``partition_table``: ESP-IDF partition tables from CSV or ``partition-table.bin``.
- ``nvs`` / ``credentials``: NVS images (built with esp-idf-nvs-partition-gen, read back by our reader)
  and which entries each firmware family reads.
- ``signing``: sign as AWS Signer does; verify as the device will.
- ``embedded``, ``doctor``, ``firmware``, ``esp_build``: embedded certificates, device-log diagnosis,
  placeholder app images, ESP-IDF build directories.
- ``flash_plan`` / ``flashing`` / ``factory_image``: what to write where; esptool (the only serial access);
  merged factory images.
- ``aws``, ``aws_codesign``, ``registration``, ``ota``: the AWS side (the local endpoint and the demo live in
  the repository's ``devtools/``, not in the installed package).
- ``batch_input``, ``journal``, ``batch``, ``batch_register``, ``bulk_registration``, ``station``: factory scale.
- ``errors``: the one error hierarchy (``ProvisioningError`` and subclasses); ``cli``: the command line.
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
]

"""Likely causes of each finding, most likely first, each with the command that checks or fixes it.

The order is what the firmware's code makes likely for that line (for a signature failure on a stock
esp-aws-iot device, a certificate that is not the signing key's comes before a changed file), then
adjusted by what the rest of the log shows: a job announcing a file larger than the OTA agent can
track puts that first, because the agent corrupts its own memory before any signature check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from device_provisioning.device import ota_limits


@dataclass(frozen=True)
class Cause:
    """One possible cause of a finding and the command that tells whether it is this one."""

    cause: str
    check: str

    def to_json(self) -> dict[str, str]:
        return {"cause": self.cause, "check": self.check}


VERIFY = "device-provisioning verify --project DIR --firmware app.bin --signature job.json --nvs creds.bin"
PROJECT = "device-provisioning project show --project DIR"
THING = "device-provisioning doctor LOG --thing THING_NAME"

_IMAGE_TOO_LARGE = Cause(
    "the job's file is larger than the OTA agent tracks (8 x OTA_MAX_BLOCK_BITMAP_SIZE blocks; 4 MiB by default): "
    "the agent overwrote its own memory before the check",
    f"{PROJECT} (shows the limit); {VERIFY} refuses such an image",
)
_WRONG_CERTIFICATE = Cause(
    "storage/creds/P11_CSK holds another certificate than the one whose key signed the image",
    f"{VERIFY} (compares the fingerprints); device-provisioning nvs show creds.bin",
)
_MISSING_CERTIFICATE = Cause(
    "nothing is at storage/creds/P11_CSK (not flashed, or flashed at another offset), so the PAL used the example's "
    "test certificate",
    f"{PROJECT} (the storage offset); device-provisioning flash --project DIR --nvs creds.bin --no-firmware "
    "(writes and reads it back)",
)
_EMBEDDED_STALE = Cause(
    "master/LTS firmware verifies with the certificate compiled into the running app, which predates your key",
    "device-provisioning codesign install-embedded --project DIR --cert codesign.crt, rebuild and flash once; "
    "verify --project DIR reads the built app's certificate",
)
_CHANGED_FILE = Cause(
    "the file shipped is not the file that was signed (rebuilt, or another build uploaded)",
    f"{VERIFY} on the exact file in the job; sha256sum it against the job's firmware object",
)

RANKED: dict[str, tuple[Cause, ...]] = {
    "OtaPalSignatureCheckFailed": (_WRONG_CERTIFICATE, _MISSING_CERTIFICATE, _EMBEDDED_STALE, _CHANGED_FILE),
    "ota-close-signaturecheckfailed": (_WRONG_CERTIFICATE, _MISSING_CERTIFICATE, _CHANGED_FILE),
    "job-status-signaturecheckfailed": (_WRONG_CERTIFICATE, _MISSING_CERTIFICATE, _EMBEDDED_STALE, _CHANGED_FILE),
    "using-test-certificate": (
        _MISSING_CERTIFICATE,
        Cause(
            "the job's certfile does not start with 'Code Verify Key', so the PAL looks for another label",
            "device-provisioning verify --signature job.json ... (checks certfile reaches P11_CSK)",
        ),
        Cause(
            "the image was built for another partition than 'storage' (the PAL reads 'storage' only)",
            "device-provisioning nvs show creds.bin; nvs build warns when --partition is not storage",
        ),
    ),
    "creds-namespace-missing": (
        _MISSING_CERTIFICATE,
        Cause(
            "the image went into the application's own 'nvs' partition",
            f"{PROJECT}; device-provisioning nvs build --project DIR ... (always targets storage)",
        ),
    ),
    "tls-x509-cert-verify-failed": (
        Cause(
            "the device trusts another root CA than Amazon Root CA 1 (ATS endpoints)",
            "openssl s_client -connect ENDPOINT:8883 -CAfile AmazonRootCA1.pem",
        ),
        Cause("the clock is not set yet (certificates look not yet valid)", "log SNTP sync before the MQTT connect"),
        Cause(
            "the endpoint is not this account's ATS data endpoint",
            "aws iot describe-endpoint --endpoint-type iot:Data-ATS",
        ),
    ),
    "tls-ssl-conn-eof": (
        Cause("the device certificate is not registered or not ACTIVE in this account and region", THING),
        Cause("the attached policy does not allow iot:Connect with the thing name as client id", THING),
        Cause("the device connects to another region's or account's endpoint", "aws iot describe-endpoint"),
    ),
    "tls-ssl-peer-close-notify": (
        Cause("the broker closed the connection: a policy denial on connect, publish or subscribe", THING),
        Cause("another connection with the same client id took over", "give each device its own thing name"),
    ),
    "tls-ssl-fatal-alert-message": (
        Cause("the broker refused the client certificate (unknown, INACTIVE or revoked)", THING),
        Cause(
            "the device presents a key that does not match its certificate", "device-provisioning nvs show creds.bin"
        ),
    ),
    "mqtt-subscribe-rejected": (Cause("the policy does not allow iot:Subscribe on the thing's jobs topics", THING),),
    "mqtt-connection-refused": (
        Cause("the policy does not allow iot:Connect for this client id", THING),
        Cause("the certificate is not attached to a thing with a policy", THING),
    ),
    "ota-file-too-large": (_IMAGE_TOO_LARGE,),
    "self-test-failed": (
        Cause(
            "the new image cannot reconnect (other thing name, endpoint or credentials)",
            "device-provisioning nvs show creds.bin",
        ),
        Cause("the new image never marks itself valid (esp_ota_mark_app_valid_cancel_rollback)", PROJECT),
    ),
}

_SIGNATURE_FINDINGS = {
    "OtaPalSignatureCheckFailed",
    "ota-close-signaturecheckfailed",
    "job-status-signaturecheckfailed",
}
_ANNOUNCED_SIZE = re.compile(r'"filesize"\s*:\s*(\d+)|[Ff]ile ?size[:=\s]+(\d+)')


def announced_file_size(lines: Sequence[str]) -> int | None:
    """The largest file size a job document or the agent printed in the log, if any."""
    sizes = [int(m.group(1) or m.group(2)) for line in lines for m in _ANNOUNCED_SIZE.finditer(line)]
    return max(sizes, default=None)


def ranked_causes(code: str, explanation: str, fix: str, log: Sequence[str]) -> tuple[Cause, ...]:
    """The causes of finding ``code`` in the order the log makes them likely."""
    causes = RANKED.get(code, (Cause(explanation, fix),))
    size = announced_file_size(log)
    if code in _SIGNATURE_FINDINGS and size is not None and size > ota_limits.DeviceLimits().max_image_size:
        causes = (_IMAGE_TOO_LARGE, *causes)
    return causes

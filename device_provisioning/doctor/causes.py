"""Likely causes of each finding, most likely first, each with the command that checks or fixes it.

The order starts from what the firmware's code makes likely for that line (for a signature failure
on a stock esp-aws-iot device, a certificate that is not the signing key's comes before a changed
file) and is then moved by what the log showed *before* the line (:mod:`.evidence`): no network, no
credentials loaded, a file larger than the agent tracks, the test certificate read. A moved cause
names the earlier line that moved it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from device_provisioning.doctor.evidence import Evidence, Mark


@dataclass(frozen=True)
class Cause:
    """One possible cause of a finding and the command that tells whether it is this one."""

    key: str
    cause: str
    check: str
    # The earlier log line that put this cause where it is, if the log moved it.
    moved_by: Mark | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "cause": self.cause,
            "check": self.check,
            "moved_by": self.moved_by.to_json() if self.moved_by else None,
        }


VERIFY = "device-provisioning verify --project DIR --firmware app.bin --signature job.json --nvs creds.bin"
PROJECT = "device-provisioning project show --project DIR"
THING = "device-provisioning doctor LOG --thing THING_NAME"

IMAGE_TOO_LARGE = Cause(
    "image-too-large",
    "the job's file is larger than the OTA agent tracks (8 x OTA_MAX_BLOCK_BITMAP_SIZE blocks; 4 MiB by default): "
    "the agent overwrote its own memory before the check",
    f"{PROJECT} (shows the limit); {VERIFY} refuses such an image",
)
WRONG_CERTIFICATE = Cause(
    "wrong-certificate",
    "storage/creds/P11_CSK holds another certificate than the one whose key signed the image",
    f"{VERIFY} (compares the fingerprints); device-provisioning nvs show creds.bin",
)
MISSING_CERTIFICATE = Cause(
    "missing-certificate",
    "nothing is at storage/creds/P11_CSK (not flashed, or flashed at another offset), so the PAL used the example's "
    "test certificate",
    f"{PROJECT} (the storage offset); device-provisioning flash --project DIR --nvs creds.bin --no-firmware "
    "(writes and reads it back)",
)
EMBEDDED_STALE = Cause(
    "embedded-certificate-stale",
    "master/LTS firmware verifies with the certificate compiled into the running app, which predates your key",
    "device-provisioning codesign install-embedded --project DIR --cert codesign.crt, rebuild and flash once; "
    "verify --project DIR reads the built app's certificate",
)
CHANGED_FILE = Cause(
    "changed-file",
    "the file shipped is not the file that was signed (rebuilt, or another build uploaded)",
    f"{VERIFY} on the exact file in the job; sha256sum it against the job's firmware object",
)
NO_NETWORK = Cause(
    "network-not-connected",
    "the device had no network when it connected: Wi-Fi never got an address (wrong SSID/password, AP out of "
    "range, 5 GHz-only AP) or it had dropped, so DNS, TCP and TLS fail whatever the certificates",
    "look for 'got ip' before the connection attempt; check the SSID/password in menuconfig and the AP's band",
)
CREDENTIALS_NOT_LOADED = Cause(
    "credentials-not-loaded",
    "the device never loaded its client certificate and key (the earlier line: NVS, PSRAM or esp_secure_cert "
    "failed), so it connects without them and the broker drops it",
    "device-provisioning nvs show creds.bin (what should be there); fix the earlier error first",
)
ROOT_CA = Cause(
    "root-ca",
    "the device trusts another root CA than Amazon Root CA 1 (ATS endpoints)",
    "openssl s_client -connect ENDPOINT:8883 -CAfile AmazonRootCA1.pem",
)
NOT_REGISTERED = Cause("certificate-not-registered", "the device certificate is not registered or not ACTIVE", THING)
POLICY_CONNECT = Cause(
    "policy-denies-connect", "the attached policy does not allow iot:Connect with the thing name as client id", THING
)

RANKED: dict[str, tuple[Cause, ...]] = {
    "OtaPalSignatureCheckFailed": (WRONG_CERTIFICATE, MISSING_CERTIFICATE, EMBEDDED_STALE, CHANGED_FILE),
    "ota-close-signaturecheckfailed": (WRONG_CERTIFICATE, MISSING_CERTIFICATE, CHANGED_FILE),
    # Closing the file is where the agent checks the signature: its failure is that check's, most of the time.
    "OtaPalFileClose": (WRONG_CERTIFICATE, MISSING_CERTIFICATE, CHANGED_FILE),
    "job-status-signaturecheckfailed": (WRONG_CERTIFICATE, MISSING_CERTIFICATE, EMBEDDED_STALE, CHANGED_FILE),
    "using-test-certificate": (
        MISSING_CERTIFICATE,
        Cause(
            "certfile-label",
            "the job's certfile does not start with 'Code Verify Key', so the PAL looks for another label",
            "device-provisioning verify --signature job.json ... (checks certfile reaches P11_CSK)",
        ),
        Cause(
            "other-partition",
            "the image was built for another partition than 'storage' (the PAL reads 'storage' only)",
            "device-provisioning nvs show creds.bin; build it for storage: "
            "device-provisioning nvs build --partition storage",
        ),
    ),
    "creds-namespace-missing": (
        MISSING_CERTIFICATE,
        Cause(
            "app-nvs-partition",
            "the image went into the application's own 'nvs' partition",
            f"{PROJECT}; device-provisioning nvs build --project DIR ... (always targets storage)",
        ),
    ),
    "tls-x509-cert-verify-failed": (
        ROOT_CA,
        Cause("clock-not-set", "the clock is not set yet (certificates look not yet valid)", "log SNTP sync first"),
        Cause(
            "wrong-endpoint",
            "the endpoint is not this account's ATS data endpoint",
            "aws iot describe-endpoint --endpoint-type iot:Data-ATS",
        ),
    ),
    "tls-ssl-conn-eof": (
        NOT_REGISTERED,
        POLICY_CONNECT,
        Cause(
            "other-region", "the device connects to another region's or account's endpoint", "aws iot describe-endpoint"
        ),
    ),
    "tls-ssl-peer-close-notify": (
        Cause(
            "policy-denial", "the broker closed the connection: a policy denial on connect, publish or subscribe", THING
        ),
        Cause("client-id-taken", "another connection with the same client id took over", "one thing name per device"),
    ),
    "tls-ssl-fatal-alert-message": (
        Cause("certificate-refused", "the broker refused the client certificate (unknown, INACTIVE or revoked)", THING),
        Cause("key-mismatch", "the device presents a key that does not match its certificate", "nvs show creds.bin"),
    ),
    "tls-connection-failed": (NOT_REGISTERED, ROOT_CA),
    "mqtt-connection-lost": (
        Cause("network-lost", "the network went away (Wi-Fi dropped, AP or router restarted)", "check Wi-Fi"),
        Cause("broker-closed", "the broker closed the connection (a policy denial on publish/subscribe does)", THING),
    ),
    "mqtt-connack-not-received": (
        POLICY_CONNECT,
        Cause("client-id-taken", "another connection with the same client id took over", "one thing name per device"),
        NOT_REGISTERED,
    ),
    "mqtt-subscribe-rejected": (Cause("policy-denies-subscribe", "the policy does not allow iot:Subscribe", THING),),
    "mqtt-connection-refused": (
        POLICY_CONNECT,
        Cause("no-policy", "the certificate is not attached to a thing with a policy", THING),
    ),
    "ota-file-too-large": (IMAGE_TOO_LARGE,),
    "self-test-failed": (
        Cause(
            "cannot-reconnect",
            "the new image cannot reconnect (other thing name, endpoint or credentials)",
            "device-provisioning nvs show creds.bin",
        ),
        Cause(
            "never-marked-valid",
            "the new image never marks itself valid (esp_ota_mark_app_valid_cancel_rollback)",
            PROJECT,
        ),
    ),
}

SIGNATURE_FINDINGS = frozenset(
    {
        "OtaPalSignatureCheckFailed",
        "ota-close-signaturecheckfailed",
        "job-status-signaturecheckfailed",
        "OtaPalFileClose",
    }
)
# Findings that need a working network path to the broker: without one they say nothing about it.
NETWORK_FINDINGS = ("tls-", "mqtt-", "dns-")


def _first(causes: tuple[Cause, ...], cause: Cause, mark: Mark) -> tuple[Cause, ...]:
    rest = tuple(c for c in causes if c.key != cause.key)
    return (replace(cause, moved_by=mark), *rest)


# mbedTLS x509_crt.c (X509_CRT_ERROR_INFO): the verify flags esp-tls prints under "verification info:" right
# after a -0x2700, each naming which of that failure's causes it was.
VERIFY_FLAG_CAUSES = {
    "the certificate validity starts in the future": "clock-not-set",
    "the certificate is not correctly signed by the trusted ca": "root-ca",
    "the certificate common name (cn) does not match with the expected cn": "wrong-endpoint",
}


def named_by_verify_flags(causes: tuple[Cause, ...], low: str, mark: Mark) -> tuple[Cause, ...] | None:
    """``causes`` with the one the mbedTLS verify flag on this line names first, if the line prints one."""
    for flag, key in VERIFY_FLAG_CAUSES.items():
        named = next((c for c in causes if c.key == key), None) if flag in low else None
        if named is not None:
            return _first(causes, named, mark)
    return None


def ranked_causes(code: str, explanation: str, fix: str, evidence: Evidence) -> tuple[Cause, ...]:
    """The causes of finding ``code`` in the order the log up to its line makes them likely."""
    causes = RANKED.get(code, (Cause(code, explanation, fix),))
    if code in SIGNATURE_FINDINGS:
        if evidence.test_certificate is not None:
            causes = _first(causes, MISSING_CERTIFICATE, evidence.test_certificate)
        too_large = evidence.beyond_agent_limit()
        if too_large is not None:
            causes = _first(causes, IMAGE_TOO_LARGE, too_large)
    if code.startswith(NETWORK_FINDINGS):
        if evidence.credentials_failed is not None:
            causes = _first(causes, CREDENTIALS_NOT_LOADED, evidence.credentials_failed)
        down = evidence.network_down()
        if down is not None:
            causes = _first(causes, NO_NETWORK, down)
    return causes

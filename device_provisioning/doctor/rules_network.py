"""Rules for the way to the broker: Wi-Fi, DNS, TLS (mbedTLS/esp-tls), MQTT, and the memory TLS needs."""

from __future__ import annotations

import re

from device_provisioning.doctor.codes import MBEDTLS_CREDENTIAL_ERRORS, MBEDTLS_ERRORS
from device_provisioning.doctor.rules import Finding, Rule

# mbedTLS and the demos print "-0x%x" (esp-aws-iot's "returned -0x52"), esp-tls "-0x%04X": one to four digits.
_MBEDTLS_CODE = re.compile(r"-0x([0-9a-f]{1,4})\b")
TLS_WORDS = ("tls", "ssl", "mbedtls", "handshake", "x509")
# esp-tls, coreMQTT's transport and the demos' wording for a TLS connection that did not come up.
TLS_FAILED = (
    "failed to establish a tls",
    "failed to open new connection",
    "tls_freertos_connect failed",
    "tls connection failed",
    "failed to create tls connection",
    "tls handshake failed",
    "ssl handshake failed",
    "esp_tls_conn_new failed",
    "failed to connect to tls",
    "failed to connnect to host",  # esp-tls's own spelling
    "failed to connect to host",
    "failed to establish new connection",  # the FreeRTOS IoT network layer
)
_TLS_FIXES = {
    0x2700: "give the device Amazon Root CA 1 (device register writes AmazonRootCA1.pem), set the clock "
    "(SNTP) before connecting, and check the endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)",
    0x7880: "the policy attached to the certificate must allow iot:Connect on client/<thing name>, and the "
    "MQTT client id must be the thing name",
    0x7200: "set CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN to 16384 (menuconfig: mbedTLS, TLS maximum input message "
    "content length), or enable CONFIG_MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH",
    0x0052: "check the endpoint name (aws iot describe-endpoint --endpoint-type iot:Data-ATS) and that the device "
    "got an IP address and a DNS server before it connects",
    0x0010: "free heap before the handshake (fewer/lighter tasks, CONFIG_MBEDTLS_DYNAMIC_BUFFER, PSRAM with "
    "CONFIG_MBEDTLS_EXTERNAL_MEM_ALLOC)",
    0x4D80: "free heap before the handshake (fewer/lighter tasks, CONFIG_MBEDTLS_DYNAMIC_BUFFER, PSRAM with "
    "CONFIG_MBEDTLS_EXTERNAL_MEM_ALLOC)",
    0x6800: "check the network path to the endpoint (port 8883 open, or 443 with ALPN) and the endpoint name "
    "(aws iot describe-endpoint --endpoint-type iot:Data-ATS); raise the TLS read timeout on a slow link",
    0x7F00: "enable and check PSRAM (CONFIG_SPIRAM) or free heap; CONFIG_MBEDTLS_DYNAMIC_BUFFER reduces the need",
}
_CREDENTIAL_FIX = (
    "the device's certificate or key in storage is not PEM/DER it can parse: rebuild the image with "
    "device-provisioning nvs build ... --device-cert dev/device.crt --device-key dev/device.key and flash it"
)


# The FreeRTOS TLS layer prints the code in decimal ("Handshake failed with error code -29312").
_MBEDTLS_DECIMAL = re.compile(r"(?:error code|returned) -(\d{2,5})\b")


def tls_code(low: str) -> int | None:
    """The first mbedTLS error the line names (``-0x2700``, ``-9984``, or esp-tls's words for it)."""
    if "failed to verify peer certificate" in low:
        return 0x2700
    for match in _MBEDTLS_CODE.finditer(low):
        code = int(match.group(1), 16)
        if code in MBEDTLS_ERRORS:
            return code
    for match in _MBEDTLS_DECIMAL.finditer(low):
        code = int(match.group(1))
        if code in MBEDTLS_ERRORS:
            return code
    return None


# esp_tls_mbedtls.c, set_client_config(): none of cacert_buf (cert_pem), crt_bundle_attach, use_global_ca_store
# or psk_hint_key was given, and CONFIG_ESP_TLS_SKIP_SERVER_CERT_VERIFY is off, so esp-tls refuses to connect.
_NO_SERVER_VERIFICATION = "no server verification option set in esp_tls_cfg_t"


def _tls_error(line: str, low: str) -> Finding | None:
    if _NO_SERVER_VERIFICATION in low:
        return (
            "tls-no-server-verification",
            "esp-tls was given nothing to verify the server with (no CA certificate, certificate bundle or global CA "
            "store), so it refused to open the connection (ESP_ERR_MBEDTLS_SSL_SETUP_FAILED) before any handshake",
            "give the connection the server's root CA: for AWS IoT, Amazon Root CA 1 as cert_pem/server_root_ca "
            "(device register writes AmazonRootCA1.pem), or attach the certificate bundle (crt_bundle_attach)",
        )
    code = tls_code(low) if any(word in low for word in TLS_WORDS) else None
    if code is None:
        if any(phrase in low for phrase in TLS_FAILED):
            return (
                "tls-connection-failed",
                "the TLS connection to the broker did not come up (esp-tls/coreMQTT transport): look at the "
                "lines before it for the reason (no network, credentials not loaded, certificate refused)",
                "check the device certificate is registered and ACTIVE (doctor LOG --thing NAME) and that the "
                "device has network and its credentials before it connects",
            )
        return None
    name, explanation = MBEDTLS_ERRORS[code]
    if code in MBEDTLS_CREDENTIAL_ERRORS:
        fix = _CREDENTIAL_FIX
    else:
        fix = _TLS_FIXES.get(
            code,
            "check that the device's certificate is registered and ACTIVE in this account and region and attached "
            "to the thing with a policy (aws iot describe-certificate / list-thing-principals)",
        )
    return (
        f"tls-{name.removeprefix('MBEDTLS_ERR_').lower().replace('_', '-')}",
        f"{name} (-0x{code:04x}): {explanation}",
        fix,
    )


_SUBSCRIBE_FAILED = (
    "mqttsubackfailure",
    "subscribe failed",
    "subscribe request failed",
    "subscription failed",
    "subscription rejected",
    "subscription refused",
    "failed to subscribe",
)
_CONNECT_REFUSED = ("mqttserverrefused", "connection refused", "not authorized", "bad username or password")
_CONNECTION_LOST = ("network error", "mqttrecvfailed", "mqttsendfailed", "mqttkeepalivetimeout")


def _mqtt_error(line: str, low: str) -> Finding | None:
    if any(p in low for p in _SUBSCRIBE_FAILED) or (
        "suback" in low and any(w in low for w in ("fail", "reject", "refus"))
    ):
        return (
            "mqtt-subscribe-rejected",
            "the broker refused a subscription (SUBACK failure): the device policy does not allow iot:Subscribe to "
            "the jobs/streams topic filters of this thing",
            "the DeviceFleet stack's policy allows $aws/things/${iot:Connection.Thing.ThingName}/jobs/* and "
            "streams/AFR_OTA-* and streams/<stage>-*, and connections as <stage>-... only; attach it to the device's "
            "certificate",
        )
    if any(p in low for p in _CONNECT_REFUSED) or ("connack" in low and any(w in low for w in ("refus", "reject"))):
        return (
            "mqtt-connection-refused",
            "the broker refused the MQTT CONNECT: the client id is not allowed by the policy, or the certificate "
            "is not attached to a thing with a policy",
            "attach the device policy to the certificate and use the thing name as client id",
        )
    if "connack recv failed" in low or "connack not received" in low:
        # coreMQTT's MQTT_Connect: the TLS session came up and CONNECT went out, then the broker closed the
        # connection without a CONNACK, which is what AWS IoT does when the policy denies iot:Connect.
        return (
            "mqtt-connack-not-received",
            "the broker closed the connection after the MQTT CONNECT without answering it (coreMQTT: CONNACK recv "
            "failed): AWS IoT does this when the certificate's policy does not allow iot:Connect for this client id",
            "attach a policy allowing iot:Connect on client/<thing name> to the certificate and use the thing name "
            "as client id",
        )
    if any(p in low for p in _CONNECTION_LOST) or "error transport connect" in low:
        return (
            "mqtt-connection-lost",
            "the MQTT connection dropped or could not be opened (receive/send failed or keep-alive timed out): the "
            "network went away, or the broker closed the connection (policy denial on publish/subscribe closes it)",
            "look for the TLS or policy finding before this line; check Wi-Fi and the broker endpoint",
        )
    return None


_DNS_FAILED = (
    "couldn't get hostname",
    "could not get hostname",
    "could not get host name",
    "dns lookup failed",
    "failed to resolve",
)


def _dns_error(line: str, low: str) -> Finding | None:
    if not (any(p in low for p in _DNS_FAILED) or ("getaddrinfo" in low and ("fail" in low or "return" in low))):
        return None
    return (
        "dns-lookup-failed",
        "the broker's name did not resolve: no network yet (Wi-Fi not connected), no DNS server from DHCP, or a "
        "typo in the endpoint",
        "check the endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS) and that 'got ip' comes first",
    )


_PSRAM_FAILED = (
    "spi ram enabled but initialization failed",
    "psram id read error",
    "failed to init external ram",
    "psram chip not found",
    "psram init failed",
    "spiram init failed",
)


def _psram_error(line: str, low: str) -> Finding | None:
    if not any(p in low for p in _PSRAM_FAILED):
        return None
    return (
        "psram-init-failed",
        "the external PSRAM did not initialise: the build expects it (CONFIG_SPIRAM) but the module has none, or "
        "another pin/voltage; allocations that need it fail, so the credentials and the TLS buffers never load",
        "build for the module you have (disable CONFIG_SPIRAM, or CONFIG_SPIRAM_IGNORE_NOTFOUND) or fix the "
        "module's PSRAM settings (flash/PSRAM voltage, pins)",
    )


NETWORK_RULES = (
    Rule(TLS_WORDS + TLS_FAILED + ("failed to verify peer certificate",), _tls_error),
    Rule(
        (*_SUBSCRIBE_FAILED, "suback", *_CONNECT_REFUSED, "connack", *_CONNECTION_LOST, "error transport connect"),
        _mqtt_error,
    ),
    Rule((*_DNS_FAILED, "getaddrinfo"), _dns_error),
    Rule(_PSRAM_FAILED, _psram_error),
)

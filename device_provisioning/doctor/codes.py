"""The error codes device logs print, named and explained from the firmware's own definitions.

ESP-IDF (``nvs.h``, ``esp_ota_ops.h``), the AWS OTA library (``ota.h`` ``OtaErr_t`` in v3,
``aws_ota_agent.h`` ``kOTA_Err_*`` in the older FreeRTOS agent, ``ota_platform_interface.h``
``OtaPalMainStatus``) and mbedTLS (``ssl.h``, ``x509.h``, ``net_sockets.h``).
"""

from __future__ import annotations

# ESP-IDF nvs.h: ESP_ERR_NVS_BASE = 0x1100.
NVS_ERRORS = {
    0x1101: ("ESP_ERR_NVS_NOT_INITIALIZED", "the NVS partition was not initialised before use"),
    0x1102: ("ESP_ERR_NVS_NOT_FOUND", "the namespace or key does not exist"),
    0x1103: ("ESP_ERR_NVS_TYPE_MISMATCH", "the value was written as another type (string vs blob)"),
    0x1104: ("ESP_ERR_NVS_READ_ONLY", "the handle or partition is read-only"),
    0x1105: ("ESP_ERR_NVS_NOT_ENOUGH_SPACE", "the partition is full"),
    0x1106: ("ESP_ERR_NVS_INVALID_NAME", "the namespace name is invalid"),
    0x1107: ("ESP_ERR_NVS_INVALID_HANDLE", "the handle was closed or is NULL"),
    0x1108: ("ESP_ERR_NVS_REMOVE_FAILED", "flash write failed while removing a value"),
    0x1109: ("ESP_ERR_NVS_KEY_TOO_LONG", "the key name is longer than 15 characters"),
    0x110A: ("ESP_ERR_NVS_PAGE_FULL", "a page is full (internal)"),
    0x110B: ("ESP_ERR_NVS_INVALID_STATE", "NVS is in an inconsistent state after a failed write"),
    0x110C: ("ESP_ERR_NVS_INVALID_LENGTH", "the buffer is too small for the value"),
    0x110D: ("ESP_ERR_NVS_NO_FREE_PAGES", "the partition has no free page (the image filled it)"),
    0x110E: ("ESP_ERR_NVS_VALUE_TOO_LONG", "the string does not fit in one page"),
    0x110F: ("ESP_ERR_NVS_PART_NOT_FOUND", "no partition with this label in the partition table"),
    0x1110: ("ESP_ERR_NVS_NEW_VERSION_FOUND", "the partition holds a newer NVS format version"),
    0x1111: ("ESP_ERR_NVS_XTS_ENCR_FAILED", "NVS encryption failed"),
    0x1112: ("ESP_ERR_NVS_XTS_DECR_FAILED", "NVS decryption failed"),
    0x1113: ("ESP_ERR_NVS_XTS_CFG_FAILED", "NVS encryption keys could not be configured"),
    0x1114: ("ESP_ERR_NVS_XTS_CFG_NOT_FOUND", "no NVS encryption keys configured"),
    0x1115: ("ESP_ERR_NVS_ENCR_NOT_SUPPORTED", "NVS encryption not supported by this build"),
    0x1116: ("ESP_ERR_NVS_KEYS_NOT_INITIALIZED", "the nvs_keys partition is empty"),
    0x1117: ("ESP_ERR_NVS_CORRUPT_KEY_PART", "the nvs_keys partition is corrupt"),
    0x1118: ("ESP_ERR_NVS_CONTENT_DIFFERS", "a stored value differs from the one compared"),
    0x1119: ("ESP_ERR_NVS_WRONG_ENCRYPTION", "the NVS partition is encrypted with other keys"),
}
NVS_ERRORS_BY_NAME = {name: (code, text) for code, (name, text) in NVS_ERRORS.items()}

# AWS OTA library ota_platform_interface.h: OtaPalMainStatus (status = main << 24 | sub).
OTA_PAL_STATUS = {
    0xE0: "OtaPalUninitialized",
    0xE1: "OtaPalOutOfMemory",
    0xE2: "OtaPalNullFileContext",
    0xE3: "OtaPalSignatureCheckFailed",
    0xE4: "OtaPalRxFileCreateFailed",
    0xE5: "OtaPalRxFileTooLarge",
    0xE6: "OtaPalBootInfoCreateFailed",
    0xE7: "OtaPalBadSignerCert",
    0xE8: "OtaPalBadImageState",
    0xE9: "OtaPalAbortFailed",
    0xEA: "OtaPalRejectFailed",
    0xEB: "OtaPalCommitFailed",
    0xEC: "OtaPalActivateFailed",
    0xED: "OtaPalFileAbort",
    0xEE: "OtaPalFileClose",
}


# AWS OTA library v3+ (ota.h): OtaErr_t, as job status reasons print it ("rejected: 0x00000011").
OTA_ERRORS_V3 = (
    "OtaErrNone",
    "OtaErrUninitialized",
    "OtaErrPanic",
    "OtaErrInvalidArg",
    "OtaErrAgentStopped",
    "OtaErrSignalEventFailed",
    "OtaErrRequestJobFailed",
    "OtaErrInitFileTransferFailed",
    "OtaErrRequestFileBlockFailed",
    "OtaErrCleanupControlFailed",
    "OtaErrCleanupDataFailed",
    "OtaErrUpdateJobStatusFailed",
    "OtaErrJobParserError",
    "OtaErrInvalidDataProtocol",
    "OtaErrMomentumAbort",
    "OtaErrDowngradeNotAllowed",
    "OtaErrSameFirmwareVersion",
    "OtaErrImageStateMismatch",
    "OtaErrNoActiveJob",
    "OtaErrUserAbort",
    "OtaErrFailedToEncodeCbor",
    "OtaErrFailedToDecodeCbor",
    "OtaErrActivateFailed",
    "OtaErrFileSizeOverflow",
    "OtaErrEmptyJobDocument",
)

# The older FreeRTOS OTA agent (aws_ota_agent.h): kOTA_Err_* = main code << 24 | sub code.
OTA_ERRORS_V1 = {
    0x01: "kOTA_Err_SignatureCheckFailed",
    0x02: "kOTA_Err_BadSignerCert",
    0x03: "kOTA_Err_OutOfMemory",
    0x04: "kOTA_Err_ActivateFailed",
    0x05: "kOTA_Err_CommitFailed",
    0x06: "kOTA_Err_RejectFailed",
    0x07: "kOTA_Err_AbortFailed",
    0x08: "kOTA_Err_PublishFailed",
    0x09: "kOTA_Err_BadImageState",
    0x0A: "kOTA_Err_NoActiveJob",
    0x0B: "kOTA_Err_NoFreeContext",
    0x0C: "kOTA_Err_HTTPInitFailed",
    0x0D: "kOTA_Err_HTTPRequestFailed",
    0x10: "kOTA_Err_FileAbort",
    0x11: "kOTA_Err_FileClose",
    0x12: "kOTA_Err_RxFileCreateFailed",
    0x13: "kOTA_Err_BootInfoCreateFailed",
    0x14: "kOTA_Err_RxFileTooLarge",
    0x20: "kOTA_Err_NullFilePtr",
    0x21: "kOTA_Err_MomentumAbort",
    0x22: "kOTA_Err_DowngradeNotAllowed",
    0x23: "kOTA_Err_SameFirmwareVersion",
    0x24: "kOTA_Err_JobParserError",
    0x25: "kOTA_Err_FailedToEncodeCBOR",
    0x26: "kOTA_Err_ImageStateMismatch",
    0x27: "kOTA_Err_GenericIngestError",
    0x28: "kOTA_Err_UserAbort",
    0x29: "kOTA_Err_ResetNotSupported",
    0x2A: "kOTA_Err_TopicTooLarge",
}

# What each OTA error means for the user and where to look, by the name both generations share.
OTA_ERROR_MEANINGS = {
    "SignatureCheckFailed": "the image's signature did not verify with the device's code-verification certificate",
    "BadSignerCert": "the signer certificate is unusable or the signature is not a P-256 DER pair",
    "SameFirmwareVersion": (
        "the device rebooted into the same version: the new image did not boot (it was rolled back), or the new "
        "image carries the same version number; bump the app version (PROJECT_VER / APP_VERSION_*)"
    ),
    "DowngradeNotAllowed": "the new image has an older version than the running one",
    "ImageStateMismatch": (
        "the job was in self test but the platform image state was not: the bootloader did not boot the new image "
        "as pending-verify (app rollback disabled: CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=n), or it rolled back"
    ),
    "JobParserError": "the job document did not parse (see the sub-code)",
    "InvalidDataProtocol": "the job offers only a data protocol the firmware was not built with (MQTT/HTTP)",
    "MomentumAbort": "too many stream requests without an answer: the stream or the data topics are not reachable",
    "FileSizeOverflow": (
        "the file is larger than the OTA agent can track (8 x OTA_MAX_BLOCK_BITMAP_SIZE blocks; 4 MiB by default)"
    ),
    "UserAbort": "the application or an operator aborted the update",
    "ActivateFailed": "the new image could not be set as boot partition",
    "RxFileTooLarge": "the file is larger than the OTA partition",
    "FileClose": "closing the file failed: usually the signature check or the final partition write",
}

# mbedTLS error codes as logs print them (negative hex), with what they mean on an AWS IoT connection.
MBEDTLS_ERRORS = {
    0x2700: (
        "MBEDTLS_ERR_X509_CERT_VERIFY_FAILED",
        "the device did not trust the broker's certificate: wrong root CA (ATS endpoints need Amazon Root CA 1), "
        "the device clock is not set (no SNTP yet: certificates look not yet valid), or the endpoint is wrong",
    ),
    0x7280: (
        "MBEDTLS_ERR_SSL_CONN_EOF",
        "the broker closed the connection during the handshake: the device certificate is not registered in this "
        "account and region, is not ACTIVE, or the endpoint belongs to another account",
    ),
    0x7780: (
        "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE",
        "the broker sent a fatal TLS alert: the device certificate was refused (unknown, INACTIVE or revoked) or "
        "the device key does not match its certificate",
    ),
    0x7880: (
        "MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY",
        "the broker closed the connection after the handshake: the attached policy denies iot:Connect for this "
        "client id (it must be the thing name), or another connection uses the same client id",
    ),
    0x0050: ("MBEDTLS_ERR_NET_CONN_RESET", "the connection was reset: network lost, or the broker dropped the client"),
    0x004C: ("MBEDTLS_ERR_NET_RECV_FAILED", "reading from the socket failed: network lost or the broker disconnected"),
    0x0052: ("MBEDTLS_ERR_NET_UNKNOWN_HOST", "the endpoint name did not resolve: no network/DNS yet, or a typo"),
    0x0044: ("MBEDTLS_ERR_NET_CONNECT_FAILED", "the TCP connection failed: no network, wrong port or endpoint"),
    0x3D00: ("MBEDTLS_ERR_PK_KEY_INVALID_FORMAT", "the device private key could not be parsed (wrong format in NVS)"),
    0x3B00: ("MBEDTLS_ERR_PK_INVALID_PUBKEY", "the key is not a valid public/private key"),
    # pem.h / pkcs12.h / pkcs5.h: the key is encrypted (password-protected) with a scheme or password the
    # device's mbedTLS cannot use.
    0x1F00: ("MBEDTLS_ERR_PKCS12_FEATURE_UNAVAILABLE", "the private key is encrypted with a scheme mbedTLS lacks"),
    0x1280: ("MBEDTLS_ERR_PEM_UNKNOWN_ENC_ALG", "the private key is encrypted with an unknown algorithm"),
    0x1300: ("MBEDTLS_ERR_PEM_PASSWORD_REQUIRED", "the private key is encrypted and no password was given"),
    0x1380: ("MBEDTLS_ERR_PEM_PASSWORD_MISMATCH", "the private key's password is wrong"),
    0x2180: ("MBEDTLS_ERR_X509_INVALID_FORMAT", "a certificate could not be parsed (wrong format in NVS)"),
    0x7F00: (
        "MBEDTLS_ERR_SSL_ALLOC_FAILED",
        "mbedTLS could not allocate its buffers: the heap is exhausted (PSRAM not initialised, or too little "
        "free internal RAM for the 16 KB TLS buffers)",
    ),
    0x7200: (
        "MBEDTLS_ERR_SSL_INVALID_RECORD",
        "a TLS record from the broker was invalid or larger than the device's input buffer: the broker sends "
        "records up to 16 KB, so CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN (TLS maximum input message content length) "
        "below 16384 fails the handshake",
    ),
    # bignum.h / ecp.h: the handshake's key exchange could not allocate its numbers.
    0x0010: ("MBEDTLS_ERR_MPI_ALLOC_FAILED", "the handshake's big-number arithmetic ran out of heap"),
    0x4D80: ("MBEDTLS_ERR_ECP_ALLOC_FAILED", "the handshake's elliptic-curve arithmetic ran out of heap"),
    0x0042: ("MBEDTLS_ERR_NET_SOCKET_FAILED", "no socket could be opened: the network stack is not up"),
    0x004E: ("MBEDTLS_ERR_NET_SEND_FAILED", "sending on the socket failed: network lost or the broker disconnected"),
    # ssl.h: the TLS layer's read timeout (mbedtls_ssl_conf_read_timeout) ran out waiting for the peer.
    0x6800: (
        "MBEDTLS_ERR_SSL_TIMEOUT",
        "the handshake timed out waiting for the broker's answer: a slow or lossy network, a firewall that drops "
        "the traffic, or an endpoint/port that never answers TLS",
    ),
}
# mbedTLS codes that say the device's own certificate or key did not load, not that the broker refused it.
MBEDTLS_CREDENTIAL_ERRORS = frozenset({0x3D00, 0x3B00, 0x2180, 0x1F00, 0x1280, 0x1300, 0x1380})

# ESP-IDF esp_ota_ops.h (ESP_ERR_OTA_BASE 0x1500).
OTA_OPS_ERRORS = {
    0x1501: ("ESP_ERR_OTA_PARTITION_CONFLICT", "the OTA partition is the running one"),
    0x1502: ("ESP_ERR_OTA_SELECT_INFO_INVALID", "the otadata partition is invalid"),
    0x1503: ("ESP_ERR_OTA_VALIDATE_FAILED", "the written image is not a valid app image for this chip"),
    0x1504: ("ESP_ERR_OTA_SMALL_SEC_VER", "the image's secure version is lower than the eFuse's"),
    0x1505: ("ESP_ERR_OTA_ROLLBACK_FAILED", "there is no valid app to roll back to"),
    0x1506: ("ESP_ERR_OTA_ROLLBACK_INVALID_STATE", "the running app is still pending verification"),
}

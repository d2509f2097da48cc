/* OTA agent settings in the form esp-aws-iot release/beta's ota_mqtt demo defines them (written for this skeleton). */
#ifndef OTA_CONFIG_H_
#define OTA_CONFIG_H_

/* 2^12 = 4 KiB blocks: with the library's 128-byte block bitmap the agent tracks images up to 4 MiB. */
#define otaconfigLOG2_FILE_BLOCK_SIZE    12UL

/* The beta PAL falls back to this certificate when storage/creds/P11_CSK is missing (it never matches your key). */
#define otapalconfigCODE_SIGNING_CERTIFICATE    "-----BEGIN CERTIFICATE-----\n(placeholder)\n-----END CERTIFICATE-----\n"

#define configENABLED_CONTROL_PROTOCOL          ( OTA_CONTROL_OVER_MQTT )
#define configENABLED_DATA_PROTOCOLS            ( OTA_DATA_OVER_MQTT )
#define configOTA_PRIMARY_DATA_PROTOCOL         ( OTA_DATA_OVER_MQTT )

#endif /* OTA_CONFIG_H_ */

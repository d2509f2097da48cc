/* OTA agent settings of this custom firmware: both data protocols, 4 KiB blocks.
 * OTA_MAX_BLOCK_BITMAP_SIZE below does NOT reach the agent: the OTA library's ota_private.h defines it again,
 * unconditionally, as 128U after including this header, so images stay below 8 x 128 x 4 KiB = 4 MiB. */
#ifndef OTA_CONFIG_H_
#define OTA_CONFIG_H_

#define otaconfigLOG2_FILE_BLOCK_SIZE    12UL
#define OTA_MAX_BLOCK_BITMAP_SIZE        256U
#define configENABLED_DATA_PROTOCOLS     ( OTA_DATA_OVER_MQTT | OTA_DATA_OVER_HTTP )

#endif /* OTA_CONFIG_H_ */

/* OTA agent settings of this custom firmware: both data protocols, 4 KiB blocks, a 256-byte block bitmap. */
#define otaconfigLOG2_FILE_BLOCK_SIZE    12UL
#define OTA_MAX_BLOCK_BITMAP_SIZE        256U
#define configENABLED_DATA_PROTOCOLS     ( OTA_DATA_OVER_MQTT | OTA_DATA_OVER_HTTP )

/* Skeleton of the OTA task: the Jobs library's job-document parser and the MQTT file-streams downloader. */
#include <string.h>
#include "jobs.h"
#include "job_parser.h"
#include "MQTTFileDownloader.h"
#include "ota_pal.h"
#include "ota_over_mqtt_demo.h"

/* Sizes this skeleton's buffers are built for (the reference demo's limits). */
#define OTA_MAX_SIGNATURE_SIZE    ( 384U )
#define MAX_JOB_ID_LENGTH         ( 64U )

void ota_over_mqtt_demo_start(void)
{
    /* 1. subscribe to $aws/things/<thing>/jobs/notify-next, 2. otaParser_parseJobDocFile() on afr_ota,
     * 3. mqttDownloader_init() with the job's streamname, 4. request blocks, 5. otaPal_CloseFile() verifies. */
}

/* Skeleton of a modular-OTA application: identity from esp_secure_cert, code-signing certificate compiled in. */
#include <stdint.h>
#include "esp_log.h"
#include "esp_secure_cert_read.h"
#include "ota_pal.h"
#include "ota_over_mqtt_demo.h"
#include "mqtt_connection.h"

static const char *TAG = "app";

/* ESP-IDF embeds main/certs/aws_codesign.crt with a trailing NUL (target_add_binary_data ... TEXT). */
extern const char code_signing_cert_start[] asm("_binary_aws_codesign_crt_start");

void app_main(void)
{
    char *device_cert = NULL, *device_key = NULL;
    uint32_t cert_len = 0, key_len = 0;

    /* esp_secure_cert_mgr reads the TLV entries of the esp_secure_cert partition. */
    if (esp_secure_cert_get_device_cert(&device_cert, &cert_len) != ESP_OK ||
        esp_secure_cert_get_priv_key(&device_key, &key_len) != ESP_OK) {
        ESP_LOGE(TAG, "no device identity in esp_secure_cert");
        return;
    }
    if (!otaPal_SetCodeSigningCertificate(code_signing_cert_start)) {
        ESP_LOGE(TAG, "code-signing certificate rejected");
        return;
    }
    mqtt_connection_start(device_cert, cert_len, device_key, key_len);
    ota_over_mqtt_demo_start();
}

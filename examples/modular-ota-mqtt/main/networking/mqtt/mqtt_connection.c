/* Placeholder for the coreMQTT-Agent connection (TLS with the esp_secure_cert identity). */
#include "mqtt_connection.h"

void mqtt_connection_start(const char *cert, uint32_t cert_len, const char *key, uint32_t key_len)
{
    (void)cert; (void)cert_len; (void)key; (void)key_len;
}

#pragma once
#include <stdint.h>

void mqtt_connection_start(const char *cert, uint32_t cert_len, const char *key, uint32_t key_len);

#pragma once

void ota_over_mqtt_demo_start(void);

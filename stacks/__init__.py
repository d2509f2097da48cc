"""CDK code only: the AWS side of signed ESP32 OTA updates."""

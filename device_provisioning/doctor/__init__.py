"""Explain OTA, TLS/MQTT, NVS and boot failures in an ESP32 serial log, each with the command that fixes it.

``codes`` names the firmware's error codes; ``rules`` recognises failures line by line; :func:`diagnose`
runs them over a log.
"""

from device_provisioning.doctor.codes import NVS_ERRORS
from device_provisioning.doctor.rules import RULES, Diagnosis, diagnose

__all__ = ["NVS_ERRORS", "RULES", "Diagnosis", "diagnose"]

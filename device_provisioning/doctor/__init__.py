"""Explain OTA, TLS/MQTT, NVS, boot and crash failures in an ESP32 serial log, each with the fix.

``codes`` names the firmware's error codes; ``rules*`` recognise failures line by line; ``evidence``
keeps what the log showed so far; :func:`diagnose` / :func:`scan_file` run them over a log in time
linear in its size; ``symbols`` decodes crash addresses against the release's ELF.
"""

from device_provisioning.doctor.codes import NVS_ERRORS
from device_provisioning.doctor.engine import RULES, Report, diagnose, scan, scan_file
from device_provisioning.doctor.rules import Diagnosis

__all__ = ["NVS_ERRORS", "RULES", "Diagnosis", "Report", "diagnose", "scan", "scan_file"]

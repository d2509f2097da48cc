"""The scan: the whole log, top to bottom, in time linear in its size and memory independent of it.

All rules' and the evidence's trigger substrings form one alternation that is searched over blocks
of about a MiB of lowercased text; only the lines holding a trigger are handed to Python code. Each
such line first updates the :class:`~.evidence.Evidence` (what the log has shown so far), then the
rules judge it; a finding is linked to the earlier finding it follows from and its causes are
ranked by the evidence, naming the line that moved them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from device_provisioning.device import ota_limits
from device_provisioning.doctor import evidence as evidence_module
from device_provisioning.doctor.causes import (
    NETWORK_FINDINGS,
    NO_NETWORK,
    VERIFY_FLAG_CAUSES,
    named_by_verify_flags,
    ranked_causes,
)
from device_provisioning.doctor.crash import CrashCollector, CrashReport
from device_provisioning.doctor.evidence import Evidence, Mark
from device_provisioning.doctor.reader import blocks_of_lines, printable, read_blocks
from device_provisioning.doctor.rules import AGENT_RULES, NVS_RULES, OTA_RULES, PAL_RULES, Diagnosis, Finding, Rule
from device_provisioning.doctor.rules_firmware import FIRMWARE_RULES, IMAGE_RULES
from device_provisioning.doctor.rules_modern import MODERN_RULES, plaintext_on_encrypted_flash, scheme_mismatch
from device_provisioning.doctor.rules_network import NETWORK_RULES

# First match wins: specific wordings before the generic ones they contain.
RULES: tuple[Rule, ...] = (
    *FIRMWARE_RULES,
    *MODERN_RULES,
    *NETWORK_RULES,
    *OTA_RULES,
    *IMAGE_RULES,
    *PAL_RULES,
    *NVS_RULES,
    *AGENT_RULES,
)
# How far under a failed certificate verification esp-tls prints the verify flags that say why.
_VERIFY_FLAGS_WITHIN = 4
# A log full of failures keeps the first findings in full and counts the rest.
MAX_FINDINGS = 500

# Failures that make later ones inevitable: a signature check after the PAL fell back to the test
# certificate (or found no P11_CSK) fails because of that, whatever the image.
CAUSES = {
    "creds-namespace-missing": (
        "using-test-certificate",
        "OtaPalSignatureCheckFailed",
        "ota-close-signaturecheckfailed",
    ),
    "using-test-certificate": ("OtaPalSignatureCheckFailed", "ota-close-signaturecheckfailed", "OtaPalFileClose"),
    "tls-x509-cert-verify-failed": ("mqtt-connection-lost",),
    "tls-ssl-conn-eof": ("mqtt-connection-lost",),
    "tls-ssl-peer-close-notify": ("mqtt-connection-lost",),
    "tls-ssl-fatal-alert-message": ("mqtt-connection-lost",),
    "tls-connection-failed": ("mqtt-connection-lost",),
    "dns-lookup-failed": ("tls-connection-failed", "mqtt-connection-lost"),
    "tls-no-server-verification": ("tls-connection-failed", "mqtt-connection-lost"),
}
_CREDENTIAL_CODES = frozenset(
    {
        "creds-namespace-missing",
        "nvs-open-failed",
        "psram-init-failed",
        "nvs-encryption-scheme-mismatch",
        "nvs-keys-partition-missing",
        "tls-x509-invalid-format",
        "tls-pk-key-invalid-format",
        "tls-pk-invalid-pubkey",
    }
)
# Lookups of the credentials that find nothing: on a first boot the firmware then writes them.
_FIRST_BOOT_LOOKUPS = frozenset({"creds-namespace-missing", "ESP_ERR_NVS_NOT_FOUND"})
# What the panic handler prints under "Guru Meditation Error" when it knows the reason better.
_CRASH_DETAILS = frozenset({"stack-overflow", "heap-corrupted"})
_NVS_EMPTY = frozenset(
    {
        "ESP_ERR_NVS_NOT_FOUND",
        "creds-namespace-missing",
        "nvs-open-failed",
        "ESP_ERR_NVS_XTS_DECR_FAILED",
        "ESP_ERR_NVS_WRONG_ENCRYPTION",
    }
)


def is_credential_failure(code: str) -> bool:
    return code in _CREDENTIAL_CODES or code.startswith(("ESP_ERR_NVS_", "esp-secure-cert-", "esp-err-nvs-sec-"))


def trie_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """One pattern matching any of ``words``, nested by common prefix.

    A flat alternation of a few hundred literals makes the regex engine try each one at every
    position; nested by prefix it follows one branch per character, about seven times faster on a
    log, and still without any repetition: the search is linear in the text.
    """
    trie: dict[str, dict[str, Any]] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return re.compile(build(trie))


def _triggers() -> re.Pattern[str]:
    words = {t for rule in RULES for t in rule.triggers} | set(evidence_module.TRIGGERS) | set(CrashCollector.TRIGGERS)
    words |= set(VERIFY_FLAG_CAUSES)
    return trie_pattern(words)


TRIGGER = _triggers()
_RULE_PATTERNS = tuple((rule, trie_pattern(rule.triggers)) for rule in RULES)


@dataclass
class Report:
    """Everything the scan found: findings in log order, crash reports, and how much was read."""

    findings: list[Diagnosis] = field(default_factory=list)
    crashes: list[CrashReport] = field(default_factory=list)
    lines: int = 0
    findings_not_kept: int = 0
    # The running app's ELF SHA-256 (prefix) the log printed, to check an --elf against.
    elf_sha256: str | None = None

    @property
    def core_dump_sha256(self) -> str | None:
        """The app ELF SHA-256 prefix a printed core dump carries, if it can be read."""
        from device_provisioning.doctor.coredump import CoreDumpError, summarise

        for crash in self.crashes:
            if crash.core_dump:
                try:
                    return summarise(crash.core_dump).app_sha256_prefix
                except CoreDumpError:
                    continue
        return None


class Scan:
    """One pass over one log."""

    def __init__(self, limits: ota_limits.DeviceLimits | None = None) -> None:
        self.evidence = Evidence(limits)
        self.report = Report()
        self.crashes = CrashCollector()
        self._network_roots: dict[int, Diagnosis] = {}
        # For a code that follows from an earlier finding (CAUSES), the line of that finding's root.
        self._follows: dict[str, int] = {}

    def feed(self, blocks: Iterable[str]) -> Report:
        lines_before = 0
        for block in blocks:
            low = block.lower()
            if len(low) != len(block):  # a few characters lowercase to two: judge this block line by line
                for offset, line in enumerate(block.split("\n")):
                    if TRIGGER.search(line.lower()):
                        self.line(lines_before + offset + 1, line)
            else:
                self._block(block, low, lines_before)
            lines_before += block.count("\n")
        return self.finish(lines_before)

    def _block(self, block: str, low: str, lines_before: int) -> None:
        pos = counted = 0
        number = lines_before + 1
        if self.crashes.in_core_dump:  # a core dump printed across two blocks
            pos = self._core_dump(block, low, 0)
            number += low.count("\n", 0, pos)
            counted = pos
        while True:
            match = TRIGGER.search(low, pos)
            if match is None:
                return
            start = low.rfind("\n", 0, match.start()) + 1
            end = low.find("\n", match.end())
            end = len(low) if end < 0 else end
            number += low.count("\n", counted, start)
            counted = start
            self.line(number, block[start:end])
            if self.crashes.in_core_dump:
                end = self._core_dump(block, low, end)
                number += low.count("\n", counted, end)
                counted = end
            pos = end + 1

    def _core_dump(self, block: str, low: str, after: int) -> int:
        """Hand the base64 lines of a printed core dump to the collector; where its end marker starts."""
        stop = low.find("core dump end", after)
        end = len(low) if stop < 0 else max(low.rfind("\n", 0, stop), after)
        self.crashes.core_dump_text(block[after:end])
        return end

    def line(self, number: int, raw: str) -> None:
        line = printable(raw)
        low = line.lower()
        self.evidence.observe(number, line, low)
        self.crashes.observe(number, line, low)
        self._verify_flags(number, line, low)
        for rule, pattern in _RULE_PATTERNS:
            if pattern.search(low):
                result = rule.match(line, low)
                if result:
                    self._add(number, line, self._refine(result))
                    return

    def _verify_flags(self, number: int, line: str, low: str) -> None:
        """A verify flag under a failed certificate verification says which cause it was: rank it first."""
        if "certificate" not in low:
            return
        mark = Mark(number, line, "mbedTLS's verify flags name the reason the broker's certificate was refused")
        found = self.report.findings
        for index in range(len(found) - 1, -1, -1):
            if number - found[index].line_number > _VERIFY_FLAGS_WITHIN:
                return
            if found[index].code == "tls-x509-cert-verify-failed":
                named = named_by_verify_flags(found[index].causes, low, mark)
                if named is not None:
                    found[index] = replace(found[index], causes=named)

    def _refine(self, result: Finding) -> Finding:
        code = result[0]
        if code in ("esp-secure-cert-not-found", "esp-secure-cert-read-failed") and self.evidence.flash_encryption:
            return plaintext_on_encrypted_flash(self.evidence.flash_encryption.line_number)
        scheme = self.evidence.nvs_scheme
        if code in _NVS_EMPTY and scheme is not None and scheme[0] == "hmac":
            return scheme_mismatch(scheme[1].line_number)
        return result

    def _add(self, number: int, line: str, result: Finding) -> None:
        code, explanation, fix = result
        found = self.report.findings
        if code in _CRASH_DETAILS and found and found[-1].code.startswith("panic-"):
            panic = found[-1]
            if number - panic.line_number <= 3:  # "Debug exception reason: ..." right under the Guru line
                detail = f"{explanation} ({line})"
                causes = ranked_causes(code, detail, fix, self.evidence)
                found[-1] = Diagnosis(code, panic.line_number, panic.line, detail, fix, causes=causes)
                return
        root = self._follows.get(code)
        if root is None and code.startswith(NETWORK_FINDINGS):
            down = self.evidence.network_down()
            credentials = self.evidence.credentials_failed
            if down is not None:
                root = self._network_root(down).line_number
            elif credentials is not None:
                root = credentials.line_number
        if is_credential_failure(code) and self.evidence.credentials_failed is None:
            self.evidence.record_credentials_failure(number, line, f"credentials did not load ({code})")
        for consequence in CAUSES.get(code, ()):
            self._follows[consequence] = root or number
        if len(found) >= MAX_FINDINGS:
            self.report.findings_not_kept += 1
            return
        causes = ranked_causes(code, explanation, fix, self.evidence)
        found.append(Diagnosis(code, number, line, explanation, fix, root, causes))

    def _network_root(self, down: evidence_module.Mark) -> Diagnosis:
        if down.line_number not in self._network_roots:
            root = Diagnosis(
                "network-not-connected",
                down.line_number,
                down.line,
                "the device had no network: Wi-Fi was not connected (no IP address after this line), so every "
                "connection to AWS IoT after it fails whatever the certificates and policies",
                NO_NETWORK.check,
                causes=(NO_NETWORK,),
            )
            self._network_roots[down.line_number] = root
            self.report.findings.append(root)
        return self._network_roots[down.line_number]

    def _drop_first_boot_lookups(self) -> None:
        """A credentials lookup that found nothing, then the firmware writing them: a first boot, no finding."""
        written = self.evidence.credentials_written
        if written is None:
            return
        found = self.report.findings
        followed = {d.consequence_of for d in found}
        found[:] = [
            d
            for d in found
            if not (
                d.code in _FIRST_BOOT_LOOKUPS and d.line_number < written.line_number and d.line_number not in followed
            )
        ]

    def finish(self, lines: int) -> Report:
        self._drop_first_boot_lookups()
        down = self.evidence.network_down()
        if down is not None and self.evidence.network_up is None:
            self._network_root(down)
        self.report.findings.sort(key=lambda d: d.line_number)
        self.report.crashes = self.crashes.reports()
        self.report.elf_sha256 = self.crashes.elf_sha256
        self.report.lines = lines
        return self.report


def scan(blocks: Iterable[str], limits: ota_limits.DeviceLimits | None = None) -> Report:
    """Read a log given as blocks of whole lines (see :mod:`.reader`)."""
    return Scan(limits).feed(blocks)


def scan_file(path: str | Path, limits: ota_limits.DeviceLimits | None = None) -> Report:
    with open(path, "rb") as stream:
        return scan(read_blocks(stream), limits)


def diagnose(lines: Iterable[str]) -> list[Diagnosis]:
    """Every known failure in the log, in log order (one diagnosis per line at most).

    A finding that follows from an earlier one names that finding's line in ``consequence_of``, so
    the root cause is fixed first.
    """
    return scan(blocks_of_lines(lines)).findings

#!/usr/bin/env python3
"""Start-up time of the command line against esptool's, both measured here, in the same run.

What a factory script or a shell completion pays before any work: `device-provisioning --version`,
`--help` and `ota create --help`, against `esptool version` (the tool this one wraps, a baseline a user
knows). Each command runs as a fresh process `--runs` times; the table shows the median and the ratio to
esptool's median. Not a test: nothing here asserts a time. Run: `python bench/startup.py`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "esptool version (baseline)": [sys.executable, "-m", "esptool", "version"],
    "device-provisioning --version": [sys.executable, "-m", "device_provisioning", "--version"],
    "device-provisioning --help": [sys.executable, "-m", "device_provisioning", "--help"],
    "device-provisioning ota create --help": [sys.executable, "-m", "device_provisioning", "ota", "create", "--help"],
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
}


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default: 15)")
    runs = parser.parse_args().runs
    # Interleaved rounds, so a burst of load on a shared machine touches every command alike.
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            samples[name].append(median_seconds(argv, 1))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians["esptool version (baseline)"]
    print(f"{'command':<42} {'median':>9} {'vs esptool version':>19}")
    for name, seconds in medians.items():
        print(f"{name:<42} {seconds * 1000:>7.0f}ms {seconds / baseline:>18.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`doctor` over large logs: seconds and peak memory at 20 MB and 200 MB, on one core.

The log is the repository's written fixtures (healthy boots, OTA runs, each failure class, a job
document line) repeated to the size, so it has the mix of a long capture: mostly healthy lines, a
failure now and then. Each scan runs in a fresh process (one core) so its peak RSS is its own. The
baseline, measured in the same run, is the floor of any reader: the same process reading and
decoding the file and splitting it into lines, doing nothing else. Flat memory shows as the same
peak RSS at 20 MB and 200 MB.

Not a test: nothing here asserts a time. Run: `python bench/doctor_scan.py [--sizes 20,200]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOGS = REPO / "tests" / "data" / "logs"

SCAN = """
import json, resource, sys, time
from device_provisioning import doctor
start = time.process_time()
report = doctor.scan_file(sys.argv[1])
print(json.dumps({"seconds": time.process_time() - start, "lines": report.lines,
                  "findings": len(report.findings) + report.findings_not_kept,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
BASELINE = """
import json, resource, sys, time
from device_provisioning.doctor.reader import read_blocks
start = time.process_time()
lines = 0
with open(sys.argv[1], "rb") as stream:
    for block in read_blocks(stream):
        lines += len(block.split("\\n")) - 1
print(json.dumps({"seconds": time.process_time() - start, "lines": lines,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_log(path: Path, megabytes: int) -> None:
    sample = "".join(p.read_text().split("\n", 1)[1] for p in sorted(LOGS.glob("*.log")))
    sample += "I (1) demo: " + json.dumps({"execution": {"jobDocument": {"pad": "x" * 4000}}}) + "\n"
    target = megabytes << 20
    with path.open("w") as handle:
        written = 0
        while written < target:
            handle.write(sample)
            written += len(sample)


def run(code: str, log: Path) -> dict[str, float]:
    # taskset keeps the child on one core where it is available.
    prefix = ["taskset", "-c", "0"] if Path("/usr/bin/taskset").exists() else []
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code, str(log)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,200", help="log sizes in MB, comma-separated")
    args = parser.parse_args()
    print(f"{'log':>8} {'lines':>10} {'doctor s':>9} {'read s':>7} {'ratio':>6} {'MB/s':>6} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            log = Path(tmp) / f"{size}.log"
            make_log(log, size)
            scan, floor = run(SCAN, log), run(BASELINE, log)
            print(
                f"{size:>6}MB {int(scan['lines']):>10} {scan['seconds']:>9.1f} {floor['seconds']:>7.1f} "
                f"{scan['seconds'] / floor['seconds']:>6.1f} {size / scan['seconds']:>6.1f} "
                f"{scan['rss_mb']:>6.0f} (read {floor['rss_mb']:.0f})"
            )
            log.unlink()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Factory-scale benchmarks, printed as one table with ratios against baselines measured in the same run.

(a) bundles/s of `batch prepare` (key, CSR, NVS image, manifest) at 1,000 and 10,000 devices, against
    what a team writes today: per device, `openssl` for the key and CSR and the
    `esp_idf_nvs_partition_gen` command line for the image (measured on a sample, default 100 devices);
(b) the floor: bare key generation + CSR signing + NVS encoding in one process per core, no files;
(c) AWS API calls per device for per-device registration (counted on the local endpoint) and for
    bulk registration (the StartThingRegistrationTask flow, counted on its validated request sequence);
(d) bytes written per device: credentials-only flashing vs full flashing;
(e) station throughput through mock ROM bootloaders behind links limited to a real UART's rate
    (92,160 B/s each way = 921,600 baud 8N1): devices/hour per port for credentials only and for a full
    flash with a 1 MB application, the 1 -> 8 port scaling as a ratio of linear, where the time of one
    device goes (connect, write, verify, reset), and MD5 proof against reading the partition back.

Not a test: nothing here asserts a time. Run: `make bench` (or `python bench/run.py --help`).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device_provisioning import aws  # noqa: E402
from device_provisioning.device import (  # noqa: E402
    app_image,
    credentials,
    esp_build,
    nvs,
    nvs_build,
    partition_table,
)
from device_provisioning.factory import (  # noqa: E402
    batch,
    bulk,
    opening,
)
from device_provisioning.flashing import layout  # noqa: E402
from device_provisioning.identity import codesign, device_tls  # noqa: E402
from devtools.local_aws import local_aws  # noqa: E402

TABLE = REPO / "examples" / "beta-ota-mqtt" / "partitions_ota_mqtt.csv"


def write_inputs(
    directory: Path, count: int, signer: Path, *, mode: str = "none", policy: str = ""
) -> tuple[Path, Path]:
    devices = directory / f"devices-{count}.csv"
    with devices.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["serial", "thing_name"])
        writer.writerows([f"SN{i:06d}", f"bench-{count}-{i:06d}"] for i in range(count))
    config = directory / f"batch-{count}-{mode}.toml"
    text = f'[batch]\npartition_table = "{TABLE}"\ncode_verify_cert = "{signer}"\n\n[registration]\nmode = "{mode}"\n'
    if policy:
        text += f'policy = "{policy}"\n'
    config.write_text(text)
    return devices, config


def pipeline_rate(directory: Path, count: int, signer: Path, workers: int) -> float:
    devices, config = write_inputs(directory, count, signer)
    started = time.perf_counter()
    batch.prepare_batch(devices, config, directory / f"out-{count}", workers=workers)
    return count / (time.perf_counter() - started)


def baseline_rate(directory: Path, sample: int, signer: Path) -> float:
    """Per device: openssl key + CSR, then the NVS generator's command line (as a shell script would)."""
    work = directory / "baseline"
    work.mkdir()
    started = time.perf_counter()
    for index in range(sample):
        device = work / f"SN{index:06d}"
        device.mkdir()
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "device.key"],
                       cwd=device, check=True, capture_output=True)  # fmt: skip
        subprocess.run(["openssl", "req", "-new", "-key", "device.key", "-subj", f"/CN=thing-{index}",
                        "-out", "device.csr"], cwd=device, check=True, capture_output=True)  # fmt: skip
        (device / "nvs.csv").write_text(
            f"key,type,encoding,value\ncreds,namespace,,\nP11_CSK,file,string,{signer}\n"
            f"cfg,namespace,,\nthing_name,data,string,thing-{index}\n"
        )
        subprocess.run([sys.executable, "-m", "esp_idf_nvs_partition_gen", "generate", "nvs.csv", "creds.bin",
                        "0x4000"], cwd=device, check=True, capture_output=True)  # fmt: skip
    return sample / (time.perf_counter() - started)


def _floor_chunk(count: int) -> int:
    certificate = codesign.create_self_signed_certificate(codesign.generate_signing_key())
    for index in range(count):
        key = device_tls.generate_device_key()
        device_tls.device_csr_pem(key, f"thing-{index}")
        entries = credentials.credential_entries(
            credentials.Credentials(certificate), "beta", extra=[nvs.NvsEntry("cfg", "thing_name", "string", "t")]
        )
        nvs_build.build_image(entries, 0x4000)
    return count


def _file_floor_chunk(arguments: tuple[str, int, int]) -> int:
    root, start, count = arguments
    for index in range(start, start + count):
        device = Path(root) / f"SN{index:06d}"
        device.mkdir()
        for name, size in (("device.key", 241), ("device.csr", 420), ("creds.bin", 0x4000)):
            descriptor = os.open(device / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.write(descriptor, b"\0" * size)
            os.close(descriptor)
    return count


def file_floor_rate(directory: Path, count: int, workers: int) -> float:
    """Creating a device's directory and its three files (key, CSR, image) alone, one process per core."""
    root = directory / "file-floor"
    root.mkdir()
    share = count // workers
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_file_floor_chunk, [(str(root), n * share, share) for n in range(workers)]))
    return share * workers / (time.perf_counter() - started)


def floor_rate(count: int, workers: int) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_floor_chunk, [count // workers] * workers))
    return (count // workers * workers) / (time.perf_counter() - started)


def per_device_calls(directory: Path, signer: Path, count: int) -> float:
    """Registration calls per device, counted on the local endpoint."""
    with local_aws():
        session = aws.connect()
        iot = session.client("iot")
        iot.create_policy(policyName="bench", policyDocument='{"Version":"2012-10-17","Statement":[]}')
        calls = 0

        def count_call(**_: object) -> None:
            nonlocal calls
            calls += 1

        iot.meta.events.register("before-call.iot.*", count_call)

        class CountingAws(aws.Aws):
            def client(self, service: str):  # type: ignore[no-untyped-def]
                return iot if service == "iot" else super().client(service)

        counting = CountingAws(session.session, session.endpoint_url)
        devices, config = write_inputs(directory, count, signer, mode="per-device", policy="bench")
        batch.prepare_batch(devices, config, directory / "out-reg", workers=2, aws=counting)
    return calls / count


def bulk_calls(size: int) -> int:
    """Calls made by the bulk flow for ``size`` devices, on stubbed clients (the emulator lacks these APIs).

    The task is assumed to finish on the third poll; AWS publishes no throughput, so polls are the
    one number that is assumed rather than counted.
    """
    from botocore.stub import ANY

    from tests.test_aws_stubbed import StubbedAws

    fake = StubbedAws()
    iot, s3 = fake.stubbers["iot"], fake.stubbers["s3"]  # type: ignore[attr-defined]
    task = "a1b2c3d4-0000-1111-2222-333344445555"
    iot.add_response("list_thing_registration_tasks", {"taskIds": []}, {"status": "InProgress"})
    iot.add_response("list_things", {"things": []}, None)  # none of the batch's things exists yet
    s3.add_response("put_object", {}, {"Bucket": "bench-bucket", "Key": "k", "Body": ANY})
    iot.add_response("start_thing_registration_task", {"taskId": task}, None)
    for status in ("InProgress", "InProgress", "Completed"):
        iot.add_response("describe_thing_registration_task", {"taskId": task, "status": status}, None)
    for report in ("RESULTS", "ERRORS"):
        iot.add_response("list_thing_registration_task_reports", {"resourceLinks": [f"r/{report}"]}, None)
    results = "".join(
        f'{{"offset": {i}, "response": {{"ResourceArns": {{"certificate": "c/{i}"}}, "CertificatePem": ""}}}}\n'
        for i in range(size)
    ).encode()
    for stubber in (iot, s3):
        stubber.activate()
    result = bulk.run_bulk_registration(
        fake, [(f"t{i}", "csr") for i in range(size)], bucket="bench-bucket", key="k",
        role_arn="arn:aws:iam::123456789012:role/bulk", policy_name="p", sleep=lambda _: None,
        fetch=lambda url: results if url.endswith("RESULTS") else b"",
    )  # fmt: skip
    assert len(result.registered) == size
    return result.calls


def bytes_per_device(directory: Path, nvs_image: bytes) -> tuple[int, int]:
    table = partition_table.load(TABLE)
    app_size = table.find("ota_0").size * 9 // 10  # a typical app fills ~90 % of its slot
    app = app_image.placeholder_app_image(payload_size=app_size)
    build = esp_build.load_build(app_image.write_placeholder_build(directory / "build", table, app=app))
    credentials_only = layout.plan_flash(table, nvs_image).bytes_to_write
    full = layout.plan_flash(table, nvs_image, build=build).bytes_to_write
    return credentials_only, full


def station_rows(directory: Path, devices_per_port: int) -> list[tuple[str, str, str]]:
    """(e): credentials-only and full flashing through UART-rate links, 1 to 8 ports."""
    from bench.flash_rate import UART_BYTES_PER_SECOND, run_station

    table = partition_table.load(TABLE)
    certificate = codesign.create_self_signed_certificate(codesign.generate_signing_key())
    image = credentials.build_credential_image(table, credentials.Credentials(certificate), "beta").image
    credentials_only = layout.plan_flash(table, image)
    # A 1 MB application of random bytes: deflate cannot shrink it, so this is the slowest case.
    app = app_image.placeholder_app_image(payload_size=1_000_000)
    build = esp_build.load_build(app_image.write_placeholder_build(directory / "station-build", table, app=app))
    full = layout.plan_flash(table, image, build=build)
    link = f"{UART_BYTES_PER_SECOND:,} B/s link"
    rows: list[tuple[str, str, str]] = []
    one = run_station(credentials_only, 1, devices_per_port)
    rows.append((f"(e) credentials only ({credentials_only.bytes_to_write:,} B), 1 port, {link}",
                 f"{one.per_port_per_hour:,.0f} devices/h/port", "1.0x"))  # fmt: skip
    # The mock has no flasher stub (ROM loader: no stub phase); the ROM erases each sector as the write reaches it.
    phases = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in one.phases.items()).replace("write", "erase+write")
    other = one.seconds / one.devices - sum(one.phases.values())
    # pyserial's socket:// ports sleep 0.3 s on close to let data drain; a real tty closes at once.
    rows.append(("(e)   where one device's time goes", f"{one.seconds / one.devices:.2f} s/device",
                 f"{phases}, socket port close {other:.2f}s"))  # fmt: skip
    for ports in (2, 4, 8):
        many = run_station(credentials_only, ports, devices_per_port)
        rows.append((f"(e) credentials only, {ports} ports at once", f"{many.per_hour:,.0f} devices/h",
                     f"{100 * many.per_hour / (ports * one.per_hour):.0f}% of linear"))  # fmt: skip
    read_back = run_station(credentials_only, 1, devices_per_port, verify="read-back").phases.get("verify", 0.0)
    rows.append(("(e)   proof by reading the NVS partition back instead of MD5", f"{read_back:.3f} s verify",
                 f"{read_back / max(one.phases.get('verify', 0.0), 1e-6):,.0f}x the MD5 proof"))  # fmt: skip
    full_one = run_station(full, 1, 1)
    rows.append((f"(e) full flash, 1 MB incompressible app ({full.bytes_to_write:,} B), 1 port",
                 f"{full_one.per_port_per_hour:,.0f} devices/h/port",
                 f"write {full_one.phases.get('write', 0.0):.1f}s of {full_one.seconds:.1f}s"))  # fmt: skip
    full_eight = run_station(full, 8, 1)
    rows.append(("(e) full flash, 8 ports at once", f"{full_eight.per_hour:,.0f} devices/h",
                 f"{100 * full_eight.per_hour / (8 * full_one.per_hour):.0f}% of linear"))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1000,10000", help="batch sizes for (a)")
    parser.add_argument("--baseline-sample", type=int, default=100, help="devices timed for the openssl baseline")
    parser.add_argument("--registration-devices", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--flash-devices-per-port", type=int, default=3, help="boards each port flashes in (e)")
    parser.add_argument("--skip-flash", action="store_true", help="leave out (e), the station throughput")
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        print("openssl is needed for the baseline (apt-get install openssl)", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="esp-ota-bench-") as temporary:
        directory = Path(temporary)
        codesign.create_identity(directory / "signer")
        signer = directory / "signer" / codesign.CERT_FILE

        baseline = baseline_rate(directory, args.baseline_sample, signer)
        rows.append((f"(a) baseline: openssl + nvs_partition_gen CLI ({args.baseline_sample} devices)",
                     f"{baseline:,.1f} bundles/s", "1.0x"))  # fmt: skip
        last_rate = 0.0
        for count in (int(c) for c in args.devices.split(",")):
            last_rate = pipeline_rate(directory, count, signer, args.workers)
            rows.append((f"(a) batch prepare, {count:,} devices, {args.workers} workers",
                         f"{last_rate:,.1f} bundles/s", f"{last_rate / baseline:,.1f}x baseline"))  # fmt: skip
        floor = floor_rate(min(2000, max(args.workers * 100, 200)), args.workers)
        rows.append(("(b) floor: keygen + CSR + NVS encoding only, no files",
                     f"{floor:,.1f} bundles/s", f"pipeline at {100 * last_rate / floor:.0f}% of floor"))  # fmt: skip
        files = file_floor_rate(directory, 4000, args.workers)
        rows.append(("(b) floor of this disk: a directory + 3 files per device, nothing computed",
                     f"{files:,.1f} bundles/s", f"pipeline at {100 * last_rate / files:.0f}% of it"))  # fmt: skip

        per_device = per_device_calls(directory, signer, args.registration_devices)
        rows.append((f"(c) per-device registration ({args.registration_devices} devices, local endpoint)",
                     f"{per_device:.1f} calls/device", "1.0x"))  # fmt: skip
        for size in (1_000, 10_000):
            bulk = bulk_calls(size) / size
            rows.append((f"(c) bulk registration, {size:,} devices (Stubber-validated sequence, 3 polls)",
                         f"{bulk:.4f} calls/device", f"{per_device / bulk:,.0f}x fewer"))  # fmt: skip

        image = (
            next((directory / "out-1000" / opening.DEVICES_DIR).glob("*/creds.bin")).read_bytes()
            if (directory / "out-1000").exists()
            else nvs_build.build_image([nvs.NvsEntry("cfg", "k", "string", "v")], 0x4000)
        )
        credentials_only, full = bytes_per_device(directory, image)
        rows.append(("(d) bytes written: credentials only (--no-firmware)", f"{credentials_only:,} B", "1.0x"))
        rows.append(("(d) bytes written: full flash (bootloader, table, otadata, app, NVS)",
                     f"{full:,} B", f"{full / credentials_only:,.0f}x more"))  # fmt: skip

        if not args.skip_flash:
            rows += station_rows(directory, args.flash_devices_per_port)

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>22}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>22}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

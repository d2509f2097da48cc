"""`make local-aws`: the local AWS endpoint, kept running, with the stacks deployed into it.

Starts the corrected endpoint (:mod:`devtools.local_aws`) on a loopback port, deploys the stacks with the
CDK CLI as `make demo` does (their outputs included: the command line reads the bucket, role, device
policy and target-name prefix from them), completes what the emulator's CloudFormation skips (bucket
versioning), writes a placeholder firmware image to try `sign`/`verify`/`ota create` with, and prints the
`export` lines for another shell. Every AWS-side command in README.md and docs/ then runs as written
(docs/local-aws.md). Ctrl-C stops it; nothing it made survives it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path

from device_provisioning import aws
from device_provisioning.contract import StackOutput
from device_provisioning.device import app_image
from device_provisioning.errors import ProvisioningError
from device_provisioning.files import write_atomic
from devtools.demo import DemoLog, check_deployment, deploy_stacks
from devtools.local_aws import local_aws

STAGE = "dev"
# A placeholder ESP32 app image (esptool's writer; not a real application) for the docs' signing commands.
FIRMWARE = "app.bin"
FIRMWARE_VERSION = "1.0.1"


def export_lines(environment: dict[str, str]) -> list[str]:
    """What another shell needs to reach the endpoint (AWS_PROFILE would point boto3 elsewhere)."""
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
    return [f"export {name}={environment[name]}" for name in names] + ["unset AWS_PROFILE"]


def _port_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve(out: Path, port: int, stop: threading.Event, *, deploy: bool = True) -> None:
    """Run the endpoint until ``stop`` is set, printing the export lines once it is ready."""
    if not _port_free(port):
        raise ProvisioningError(f"port {port} is in use on 127.0.0.1: pass --port 0 for a free one, or another port")
    out.mkdir(parents=True, exist_ok=True)
    with local_aws(port=port) as endpoint:
        print(f"local AWS endpoint {endpoint.url} (moto server on loopback, corrected: see docs/demo.md)", flush=True)
        session = aws.connect()
        if deploy:
            log = DemoLog()
            values = deploy_stacks(log, session, out, [f"stage={STAGE}"], "endpoint")
            check_deployment(log, session, values)
            missing = [name for name in StackOutput if name not in values]
            if missing:
                raise ProvisioningError(f"the deployed stacks lack the outputs {', '.join(missing)}")
            print(f"  stack outputs: {', '.join(f'{key}={value}' for key, value in sorted(values.items()))}")
        firmware = write_atomic(out / FIRMWARE, app_image.placeholder_app_image(version=FIRMWARE_VERSION))
        print(f"  placeholder firmware {firmware} (version {FIRMWARE_VERSION}, not a real application)")
        print("\nready. In another shell, from this directory:\n", flush=True)
        for line in export_lines(endpoint.environment):
            print(line)
        print(f"# or give each AWS command --endpoint-url {endpoint.url}\n", flush=True)
        print("Ctrl-C stops the endpoint (everything in it is gone).", flush=True)
        stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make local-aws", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: 0, a free one)")
    parser.add_argument("--out", type=Path, default=Path("out/local-aws"), help="where the outputs and firmware go")
    parser.add_argument("--no-deploy", action="store_true", help="start the endpoint only (no stacks)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        serve(args.out, args.port, stop, deploy=not args.no_deploy)
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    except ProvisioningError as error:
        print(f"ERROR {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

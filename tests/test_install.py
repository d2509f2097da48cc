"""`pip install` of the built wheel gives a working tool in a clean virtual environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from device_provisioning import __version__
from device_provisioning.device.app_image import placeholder_app_image

REPO = Path(__file__).resolve().parent.parent
UNSHIPPED = (".git", ".venv*", "node_modules", "cdk.out", "out", "build", "*.egg-info", ".*_cache", "__pycache__")

pytestmark = pytest.mark.integration  # builds a wheel and installs it with pip, as subprocesses


def run(command: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def test_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    # Nothing of this checkout or of the test environment may leak into the new venv.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AWS_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp_path / "dist"
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree it builds.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*UNSHIPPED))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, source], tmp_path, env)
    (wheel,) = dist.glob("esp_ota_provisioning-*.whl")
    target = tmp_path / "venv"
    # A venv without pip of its own (ensurepip alone takes ~4 s): this pip installs into it (`--python`), and
    # skips byte-compiling botocore's thousands of modules, which Python does on first import anyway.
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    # Pinned versions (requirements.txt) as constraints: the same releases the suite runs on.
    # pip takes no extras in a constraint ("moto[server]==..." -> "moto==...").
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(re.sub(r"\[[^\]]*\]", "", (REPO / "requirements.txt").read_text()))
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile"]
    run([*pip, "-c", constraints, wheel], tmp_path, env)

    work = tmp_path / "work"
    work.mkdir()  # not the checkout: imports must come from the installed wheel
    tool = target / "bin" / "device-provisioning"
    assert run([tool, "--version"], work, env).stdout.strip() == f"device-provisioning {__version__}"
    located = run([python, "-c", "import device_provisioning, sys; print(device_provisioning.__file__)"], work, env)
    assert str(target) in located.stdout
    files = run([python, "-c", "import importlib.metadata as m; print(*m.files('esp-ota-provisioning'))"], work, env)
    assert "device_provisioning/py.typed" in files.stdout and "devtools" not in files.stdout
    installed = "import importlib.metadata as m; print(*sorted(d.metadata['Name'] for d in m.distributions()))"
    assert "moto" not in run([python, "-c", installed], work, env).stdout.split()

    run([tool, "codesign", "create", "--out", "keys"], work, env)
    table = work / "partitions.csv"
    table.write_text((REPO / "tests" / "data" / "partition-tables" / "beta-ota-mqtt.csv").read_text())
    run([tool, "nvs", "build", "--partition-table", table, "--family", "beta",
         "--code-verify-cert", "keys/codesign.crt", "--out", "creds.bin"], work, env)  # fmt: skip
    (work / "app.bin").write_bytes(placeholder_app_image(version="1"))
    run([tool, "sign", "--key", "keys/codesign.key", "--firmware", "app.bin", "--out", "app.sig"], work, env)
    verified = run([tool, "verify", "--firmware", "app.bin", "--signature", "app.sig", "--nvs", "creds.bin",
                    "--family", "beta"], work, env)  # fmt: skip
    assert "accept" in verified.stdout.lower()
    (work / "boot.log").write_text("I (1234) AWS_OTA: Received: 64   Queued: 64   Processed: 64   Dropped: 0\n")
    doctor = subprocess.run([tool, "doctor", "boot.log"], cwd=work, env=env, capture_output=True, text=True)
    assert doctor.returncode in (0, 4) and "Traceback" not in doctor.stderr
    register_help = run([tool, "device", "register", "--help"], work, env)
    assert "usage" in register_help.stdout
    root_ca_length = "from device_provisioning.aws import registration as r; print(len(r.amazon_root_ca()))"
    root_ca = run([python, "-c", root_ca_length], work, env)
    assert int(root_ca.stdout) > 1000

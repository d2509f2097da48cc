"""`make local-aws` as a newcomer uses it: start it, copy its export lines, run the docs' commands as written.

The commands are read from the code blocks of docs/local-aws.md (each line that starts with
`device-provisioning`, continuation lines joined, trailing comments dropped), so the docs cannot drift
from what works. A line whose comment says `refused` must exit 1; every other line must succeed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "local-aws.md"
CDK = REPO / "node_modules" / ".bin" / "cdk"

pytestmark = [
    pytest.mark.integration,  # make local-aws: a subprocess, the CDK CLI, jsii
    pytest.mark.skipif(not CDK.exists(), reason="run `make setup` to install the CDK CLI"),
]


def documented_commands(text: str) -> list[tuple[str, bool]]:
    """(command, refused?) for each `device-provisioning` line of the document's sh code blocks."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("device-provisioning "):
                command, _, comment = line.partition("  #")
                commands.append((" ".join(command.split()), "refused" in comment))
    return commands


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """`make local-aws` running in a fresh directory; the environment its export lines give."""
    work = tmp_path_factory.mktemp("newcomer")
    (work / "examples").symlink_to(REPO / "examples")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    environment["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen(
        [sys.executable, "-m", "devtools.local_endpoint"], cwd=work, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops"):
                break
        exported = dict(re.findall(r"^export (\w+)=(\S+)$", "\n".join(lines), re.M))
        assert "AWS_ENDPOINT_URL" in exported, "\n".join(lines)
        assert "unset AWS_PROFILE" in lines
        shell = {**environment, **exported, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        yield work, shell
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_docs_commands_run_as_written_against_make_local_aws(endpoint: tuple[Path, dict[str, str]]) -> None:
    work, shell = endpoint
    commands = documented_commands(DOC.read_text())
    assert len([c for c, refused in commands if not refused]) >= 10
    for command, refused in commands:
        result = subprocess.run(shlex.split(command), cwd=work, env=shell, capture_output=True, text=True, timeout=120)
        expected = 1 if refused else 0
        assert result.returncode == expected, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
    # The AWS CLI's way: --endpoint-url instead of the variable.
    url = shell.pop("AWS_ENDPOINT_URL")
    result = subprocess.run(["device-provisioning", "fleet", "show", "--endpoint-url", url, "--json"], cwd=work,
                            env=shell, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and '"thing": "dev-board-42"' in result.stdout, result.stderr

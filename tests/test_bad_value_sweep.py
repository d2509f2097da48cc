"""Every option of every command, given its type's bad values: one line, non-zero exit, nothing changed.

The command list and each command's options come from the real parser, so a new command or option is
swept as soon as it exists (and a new command without a valid base invocation here fails the test).
Each case starts from a base invocation of the command, replaces one option's value (or adds the option)
with a bad value of that option's kind, and checks:

- ``main`` returns (no exception escapes) and nothing anywhere printed a traceback;
- a refusal is exactly one ``ERROR`` line on stderr;
- values that can never be right for the kind (non-numbers, out of range, missing files) are refused;
- no file of the workspace was created, changed or had its mode changed, and a refused command left its
  output directory empty.

AWS commands point at a closed loopback port: everything a command checks before its first call is
swept; what AWS itself would refuse is not (the AWS tests cover those calls).
"""

from __future__ import annotations

import argparse
import io
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_provisioning.cli import build_parser, main
from device_provisioning.cli.batch import host_name
from device_provisioning.cli.common import aws_region, non_empty, project_dir
from device_provisioning.device import app_image
from device_provisioning.device import partition_table as pt
from tests.helpers import BETA_TABLE, EXAMPLES
from tests.tiers import integration_fixture

# Output options: their value is written, never read. Directory outputs are directories the command fills.
FILE_OUTPUTS = {"out", "write_context"}
DIRECTORY_OUTPUT_COMMANDS = {"codesign create", "codesign csr", "codesign import-cert", "device register",
                             "batch prepare"}  # fmt: skip

# Types that take free text (checked for emptiness or form, but many words are valid).
# Free-text kinds: a host name is text too; a bare word like 'abc' is a valid one (the page would then serve).
TEXT_TYPES = {None, non_empty, aws_region, host_name}

# The base invocation of each command: valid inputs from the workspace ({ws}), outputs under a fresh
# directory per case ({out}). Positionals are keyed by their dest.
BASE: dict[str, list[tuple[str, str]]] = {
    "project show": [("--project", "{ws}/firmware")],
    "codesign create": [("--out", "{out}/keys")],
    "codesign csr": [("--out", "{out}/keys")],
    "codesign import-cert": [("--out", "{out}/keys"), ("--cert", "{ws}/keys/codesign.crt")],
    "codesign show": [("cert", "{ws}/keys/codesign.crt"), ("--key", "{ws}/keys/codesign.key")],
    "codesign install-embedded": [("--project", "{ws}/project"), ("--cert", "{ws}/keys/codesign.crt")],
    "codesign rotate": [("action", "plan"), ("--from", "{ws}/keys/codesign.crt"), ("--to", "{ws}/other/codesign.crt"),
                        ("--family", "beta")],
    "codesign import": [("--cert", "{ws}/keys/codesign.crt"), ("--key", "{ws}/keys/codesign.key"),
                        ("--write-context", "{out}/cdk.context.json")],
    "signer profile": [("--name", "dev_profile"),
                       ("--certificate-arn", "arn:aws:acm:eu-west-1:123456789012:certificate/abc")],
    "device register": [("thing", "board-1"), ("--out", "{out}/board-1")],
    "ota create": [("--firmware", "{ws}/app.bin"), ("--targets", "board-1"), ("--sign-key", "{ws}/keys/codesign.key"),
                   ("--device-cert", "{ws}/keys/codesign.crt"), ("--via", "job"), ("--bucket", "firmware-bucket"),
                   ("--role-arn", "arn:aws:iam::123456789012:role/ota")],
    "ota status": [("id", "AFR_OTA-1")],
    "ota rollout": [("action", "plan"), ("file", "{ws}/rollout.toml")],
    "fleet show": [],
    "batch prepare": [("--devices", "{ws}/devices.csv"), ("--config", "{ws}/batch.toml"), ("--out", "{out}/batch")],
    "batch status": [("dir", "{ws}/batch")],
    "batch allow": [("dir", "{ws}/batch"), ("--bucket", "firmware-bucket")],
    "batch station": [("action", "serve"), ("dir", "{ws}/batch"), ("--port", "0")],
    "batch flash": [("dir", "{ws}/batch"), ("--ports", "{ws}/no-such-port"), ("--no-stub", "")],
    "partitions show": [("table", "{ws}/partitions.csv")],
    "nvs build": [("--partition-table", "{ws}/partitions.csv"), ("--family", "beta"),
                  ("--code-verify-cert", "{ws}/keys/codesign.crt"), ("--out", "{out}/creds.bin")],
    "nvs show": [("image", "{ws}/creds.bin")],
    "flash": [("--partition-table", "{ws}/partitions.csv"), ("--nvs", "{ws}/creds.bin"), ("--no-firmware", ""),
              ("--port", "{ws}/no-such-port"), ("--no-stub", "")],
    "image merge": [("--partition-table", "{ws}/partitions.csv"), ("--nvs", "{ws}/creds.bin"),
                    ("--build-dir", "{ws}/build"), ("--out", "{out}/factory.bin")],
    "image inspect": [("image", "{ws}/factory.bin")],
    "sign": [("--key", "{ws}/keys/codesign.key"), ("--firmware", "{ws}/app.bin"), ("--out", "{out}/app.sig")],
    "verify": [("--firmware", "{ws}/app.bin"), ("--signature", "{ws}/app.sig"), ("--cert", "{ws}/keys/codesign.crt")],
    "doctor": [("log", "{ws}/device.log")],
    "factory-ca create": [("--out", "{out}/factory-ca.crt"), ("--kms-key", "alias/factory-ca")],
    "factory-ca show": [("cert", "{ws}/factory-ca.crt")],
    "factory-ca verification": [("--ca", "{ws}/factory-ca.crt"), ("--out", "{out}/verification.crt"),
                                ("--kms-key", "alias/factory-ca")],
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One option of one command, and one bad value for it."""

    command: str
    option: str
    value: str
    must_refuse: bool

    @property
    def id(self) -> str:
        shown = self.value if len(self.value) < 24 else self.value[:20] + "..."
        return ascii(f"{self.command} {self.option}={shown}")


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not children:
            yield " ".join(path), parser
            return
        for name, child in children[0].choices.items():
            yield from walk(child, [*path, name])

    yield from walk(build_parser(), [])


def option_name(action: argparse.Action) -> str:
    # The long form (-p/--port is named --port; -p/--port/--ports is named --ports).
    return action.option_strings[-1] if action.option_strings else action.dest


def bad_values(command: str, action: argparse.Action) -> list[tuple[str, bool]]:
    """Bad values for an option's kind, each with whether it must always be refused."""
    if action.type in (Path, project_dir):
        if action.dest in FILE_OUTPUTS:
            outputs = [("{ws}/a-file/below-a-file", True), ("{ws}/app.bin", True)]
            if command not in DIRECTORY_OUTPUT_COMMANDS:
                outputs.append(("{ws}/keys", True))  # an existing directory
            return outputs
        if action.dest == "project":  # a firmware project directory
            return [("{ws}/missing", True), ("{ws}/app.bin", True), ("{ws}/keys", True)]
        return [("{ws}/missing", True), ("{ws}/keys", True), ("{ws}/empty", True), ("{ws}/garbage", True)]
    if action.choices:
        return [("bogus", True), ("", True)]
    if action.type not in TEXT_TYPES:  # ranges, offsets, protocol lists: never a bare word, a negative or a huge value
        return [("abc", True), ("-1", True), ("99999999999999999999999", True), ("", True)]
    # Free text: some commands accept any text here; none may crash on it or write half a result.
    values = [("", False), ("x" * 5000, False), ("a\x00b", False), ("\udcff", False), ("../../outside", False)]
    return values


def cases() -> list[Case]:
    found = []
    for command, parser in commands():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._StoreTrueAction) or action.dest == "json":
                continue
            for value, must_refuse in bad_values(command, action):
                found.append(Case(command, option_name(action), value, must_refuse))
    return found


CASES = cases()


def test_every_command_has_a_base_invocation() -> None:
    assert {command for command, _ in commands()} == set(BASE)


@pytest.fixture(scope="module")
@integration_fixture  # its batch is prepared by worker processes
def workspace(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    ws = tmp_path_factory.mktemp("sweep")

    def ok(*argv: object) -> None:
        err = io.StringIO()
        assert main([str(a) for a in argv], out=io.StringIO(), err=err) == 0, err.getvalue()

    ok("codesign", "create", "--out", ws / "keys")
    ok("codesign", "create", "--out", ws / "other")
    from device_provisioning.identity import codesign, factory_ca, pki
    from device_provisioning.identity.signers import FileSigner

    ca = factory_ca.create_ca_certificate(FileSigner(codesign.generate_signing_key()), common_name="Sweep CA")
    (ws / "factory-ca.crt").write_bytes(pki.certificate_pem(ca))
    (ws / "partitions.csv").write_text(BETA_TABLE.read_text())
    (ws / "app.bin").write_bytes(app_image.placeholder_app_image(version="1"))
    ok("sign", "--key", ws / "keys" / "codesign.key", "--firmware", ws / "app.bin", "--out", ws / "app.sig")
    ok("nvs", "build", "--partition-table", ws / "partitions.csv", "--family", "beta",
       "--code-verify-cert", ws / "keys" / "codesign.crt", "--out", ws / "creds.bin")  # fmt: skip
    app_image.write_placeholder_build(ws / "build", pt.load(ws / "partitions.csv"))
    ok("image", "merge", "--partition-table", ws / "partitions.csv", "--nvs", ws / "creds.bin",
       "--build-dir", ws / "build", "--out", ws / "factory.bin")  # fmt: skip
    (ws / "project" / "main").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "beta-ota-mqtt", ws / "firmware")
    (ws / "devices.csv").write_text("serial,thing_name\nSN1,board-1\n")
    (ws / "batch.toml").write_text(
        f'[batch]\npartition_table = "{ws / "partitions.csv"}"\ncode_verify_cert = "{ws / "keys" / "codesign.crt"}"\n'
        'family = "beta"\n[registration]\nmode = "none"\n'
    )
    ok("batch", "prepare", "--devices", ws / "devices.csv", "--config", ws / "batch.toml", "--out", ws / "batch")
    (ws / "rollout.toml").write_text(
        '[rollout]\nname = "fw"\nfirmware = "app.bin"\nthing_groups = ["dev-fleet"]\n'
        '[signing]\nkey = "keys/codesign.key"\ncertificate = "keys/codesign.crt"\n'
        '[[stage]]\nname = "all"\npercent = 100\n'
    )
    (ws / "device.log").write_text("I (1234) ota_over_mqtt_demo: Received OTA job\n")  # no failure: exit 0
    (ws / "a-file").write_text("a file, not a directory\n")
    (ws / "empty").write_bytes(b"")
    (ws / "garbage").write_bytes(bytes(range(256)) * 8)
    return ws


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(directory)): (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "journal.sqlite-shm"  # SQLite's shared-memory index, rebuilt on open
    }


def argv_for(case: Case, parser: argparse.ArgumentParser, ws: Path, out: Path) -> list[str]:
    actions = {option_name(a): a for a in parser._actions}
    swept = actions[case.option]
    # Options that exclude the swept one (argparse mutually exclusive groups) leave the base invocation.
    excluded = {
        option_name(other)
        for group in parser._mutually_exclusive_groups
        if swept in group._group_actions
        for other in group._group_actions
        if other is not swept
    }
    pairs = [(name, value) for name, value in BASE[case.command] if name not in excluded and name != case.option]
    pairs.append((case.option, case.value))
    argv = case.command.split()
    for name, value in pairs:
        text = value.replace("{ws}", str(ws)).replace("{out}", str(out))
        if name.startswith("-"):
            argv += [name] if isinstance(actions[name], argparse._StoreTrueAction) else [name, text]
        else:
            argv.append(text)
    return argv


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return dict(commands())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_value(case: Case, workspace: Path, parsers, tmp_path: Path, capfd, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # AWS calls go to a closed loopback port: refused at once, never the real account.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = argv_for(case, parsers[case.command], workspace, out_dir)
    before = snapshot(workspace)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(argv, out=stdout, err=stderr)
    printed = capfd.readouterr()
    everything = stdout.getvalue() + stderr.getvalue() + printed.out + printed.err
    assert "Traceback" not in everything, everything
    if case.must_refuse:
        assert code != 0, f"accepted: {argv}"
    if code != 0:
        lines = stderr.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ERROR "), stderr.getvalue()
        assert list(out_dir.iterdir()) == [], "a refused command left output behind"
    assert snapshot(workspace) == before, "the workspace changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "something was written to the working directory"

"""The command line as the CLI tests call it: main([...]) in-process, and the one-line error it must give."""

from __future__ import annotations

import io

from device_provisioning.cli import main


def run(*argv: object) -> tuple[int, str, str]:
    """main(argv) in-process, each argument as text (paths too): its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR "), err
    for fragment in fragments:
        assert fragment in lines[0]

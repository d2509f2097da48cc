"""Every ``--option`` a message, hint, page or document names exists on the command it is suggested for.

Where the text names the command (``device-provisioning flash ... --no-firmware``, `` `image merge --out` ``), the
option must be one of that command's. A bare hint in the package ("pass --force") is suggested for every command
that can print it: a string in a ``cli/`` function belongs to the commands whose handlers reach that function, and
each of them must take the option; a string in a library module belongs to the commands whose handlers import it,
and one of them at least must take it. A bare mention in a document must name an option some command takes.
Options of other tools (idf.py, esptool, cdk, pytest, make ...) are left out by the tool's name before them.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_provisioning.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "device_provisioning"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Ours are spelled with hyphens: --flash_mode, --skip_flash and --kp_hmac_inputkey are other tools'.
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w])")
# CSS custom properties (the operator page's colours) look like options.
CSS_PROPERTY = re.compile(r"var\(--[\w-]+\)|(?<=[{;\s])--[\w-]+:[^;]*;")
# A text ends a command line where a shell or prose would: a pipe, a list, a closing quote or bracket, a line end.
END = re.compile(r"[|;`\n)\"]|&&|[:,] ")
OTHER_TOOLS = re.compile(
    r"(?<![\w.-])(bench/[\w/]+\.py|configure_esp_secure_cert\.py|esp-secure-cert-tool|idf\.py|esptool(?:\.py)?|espsecure(?:\.py)?|espefuse(?:\.py)?|cdk|aws|pytest|make|npm|npx|pip|"
    r"git|python3?|openssl|docker|moto_server|psql|pg_ctl|curl|nvs_partition_gen(?:\.py)?|ruff|mypy|node|"
    r"mutmut|checkov|chromium|softhsm2-util|pkcs11-tool)(?![\w-])"
)


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not nested:
        yield " ".join(path), parser
        return
    for name, child in nested[0].choices.items():
        yield from walk(child, (*path, name))


PARSERS = dict(walk(build_parser()))
OPTIONS = {name: {o for action in p._actions for o in action.option_strings} for name, p in PARSERS.items()}
TOP_LEVEL = {o for action in build_parser()._actions for o in action.option_strings}
EVERY_OPTION = set().union(TOP_LEVEL, *OPTIONS.values())
GROUPS = {name.split()[0] for name in PARSERS if " " in name}
TOP = {name.split()[0] for name in PARSERS}


@dataclass(frozen=True)
class Mention:
    option: str
    command: str | None  # the command the text names, when it names one
    where: str


def command_at(text: str, start: int) -> tuple[str, int] | None:
    """The command named at ``text[start:]`` (``ota create``, ``flash``) and where its arguments begin."""
    words = re.match(r"([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?", text[start:])
    if not words or words.group(1) not in TOP:
        return None
    first, second = words.group(1), words.group(2)
    if first in GROUPS:
        if second is None or f"{first} {second}" not in PARSERS:
            return None
        return f"{first} {second}", start + words.end(2)
    return first, start + words.end(1)


def mentions(text: str, where: str) -> Iterator[Mention]:
    """The options ``text`` names, each with the command it names them for (``None``: a bare hint)."""
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    text = CSS_PROPERTY.sub(lambda found: " " * len(found.group()), text)
    claimed: set[int] = set()
    # Command lines: after `device-provisioning`, or a backticked span that starts with a command's name.
    starts = [m.end() for m in re.finditer(r"device-provisioning[ \t]+", text)]
    starts += [m.end() for m in re.finditer(r"(?<!`)``?(?=[a-z])", text)]
    for start in starts:
        found = command_at(text, start)
        if found is None:
            continue
        command, begin = found
        end = END.search(text, begin)
        stop = end.start() if end else len(text)
        for option in OPTION.finditer(text, begin, stop):
            claimed.add(option.start())
            yield Mention(option.group(), command, where)
    # Other tools' command lines: their options are theirs.
    for tool in OTHER_TOOLS.finditer(text):
        end = END.search(text, tool.end())
        claimed.update(o.start() for o in OPTION.finditer(text, tool.end(), end.start() if end else len(text)))
    for option in OPTION.finditer(text):
        if option.start() not in claimed:
            yield Mention(option.group(), None, where)


# --- which commands can print a string of the package ---------------------------------------------------------


@dataclass
class Module:
    name: str
    tree: ast.Module
    imports: dict[str, str]  # local name -> "module" or "module:function"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    paths = sorted(PACKAGE.rglob("*.py"))
    names = {module_name(path) for path in paths}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports: dict[str, str] = {}
        for node in ast.walk(tree):  # lazy imports inside functions count: that is how commands load the library
            if isinstance(node, ast.Import):
                for alias in node.names:
                    imports[alias.asname or alias.name.split(".")[0]] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imports[alias.asname or alias.name] = full if full in names else f"{node.module}:{alias.name}"
        modules[module_name(path)] = Module(module_name(path), tree, imports)
    return modules


# The package's modules, their functions and what each command's handler reaches: read by the autouse fixture
# below when this file's tests run, not at import (every xdist worker collects this file; reading and parsing
# the package took each of them ~1.5 s).
MODULES: dict[str, Module] = {}


def functions(module: Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        node.name: node for node in ast.walk(module.tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


FUNCTIONS: dict[str, dict[str, ast.FunctionDef | ast.AsyncFunctionDef]] = {}


def resolve(module: str, name: str, depth: int = 0) -> tuple[str, str] | None:
    """The (module, function) ``name`` means in ``module``, following re-exports."""
    if name in FUNCTIONS.get(module, {}):
        return module, name
    target = MODULES[module].imports.get(name) if module in MODULES else None
    if target and ":" in target and depth < 5:
        source, imported = target.split(":")
        return resolve(source, imported, depth + 1)
    return None


def reach(handler: tuple[str, str]) -> tuple[set[tuple[str, str]], set[str]]:
    """The cli functions a handler runs (by name, through re-exports) and the library modules it imports."""
    seen: set[tuple[str, str]] = set()
    imported: set[str] = set()
    todo = [handler]
    while todo:
        module, name = todo.pop()
        if (module, name) in seen:
            continue
        seen.add((module, name))
        for node in ast.walk(FUNCTIONS[module][name]):
            if isinstance(node, ast.Name):
                found = resolve(module, node.id)
                if found and found[0].startswith("device_provisioning.cli"):
                    todo.append(found)
                elif node.id in MODULES[module].imports:
                    imported.add(MODULES[module].imports[node.id].split(":")[0])
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                target = MODULES[module].imports.get(node.value.id, "")
                if target.startswith("device_provisioning.cli") and node.attr in FUNCTIONS.get(target, {}):
                    todo.append((target, node.attr))
                elif target in MODULES:
                    imported.add(target)
                    if f"{target}.{node.attr}" in MODULES:
                        imported.add(f"{target}.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in MODULES else node.module)
    # The library modules those import, at any depth.
    todo_modules = [m for m in imported if m in MODULES]
    while todo_modules:
        for target in MODULES[todo_modules.pop()].imports.values():
            name = target.split(":")[0]
            if name in MODULES and name not in imported:
                imported.add(name)
                todo_modules.append(name)
    return seen, imported


def handlers() -> dict[str, tuple[str, str]]:
    found = {}
    for command, parser in PARSERS.items():
        handler = parser.get_default("handler")
        found[command] = (handler.__module__, handler.__name__)
    return found


REACH: dict[str, tuple[set[tuple[str, str]], set[str]]] = {}


@pytest.fixture(autouse=True, scope="module")
def package_index() -> None:
    if not MODULES:
        MODULES.update(load_modules())
        FUNCTIONS.update({name: functions(module) for name, module in MODULES.items()})
        REACH.update({command: reach(handler) for command, handler in handlers().items()})
    assert MODULES and FUNCTIONS and REACH, "no module of the package was read"


def package_strings() -> Iterator[tuple[str, str | None, str, int]]:
    """Every string of the package but docstrings (they describe code, other tools' options included):
    (module, enclosing function or None, text, line); f-strings joined."""
    for name, module in MODULES.items():
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }

        def visit(node: ast.AST, function: str | None) -> Iterator[tuple[str, str | None, str, int]]:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                function = node.name
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
                yield name, function, str(text), node.lineno
                return
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                yield name, function, node.value, node.lineno
            for child in ast.iter_child_nodes(node):
                yield from visit(child, function)

        yield from visit(module.tree, None)


def problems() -> list[str]:
    found = []
    for module, function, text, line in package_strings():
        where = f"{module.replace('.', '/')}.py:{line}"
        if OPTION.fullmatch(text):  # an option as a value the code handles ("--json" in argv), not a hint
            found += check_named(Mention(text, None, where))
            continue
        for mention in mentions(text, where):
            found += check_in_package(mention, module, function)
    for command, parser in PARSERS.items():  # a help line is suggested for its command
        for action in parser._actions:
            for mention in mentions(action.help or "", f"{command} --help"):
                found += check_named(mention if mention.command else Mention(mention.option, command, mention.where))
    for path in DOCUMENTS:
        # A paragraph about another tool (a bench script, cdk) names that tool's options in its prose too.
        for number, paragraph in enumerate(path.read_text(encoding="utf-8").split("\n\n")):
            about_other_tool = OTHER_TOOLS.search(paragraph) is not None
            for mention in mentions(paragraph, f"{path.relative_to(ROOT)} paragraph {number + 1}"):
                if mention.command is not None or not about_other_tool:
                    found += check_named(mention)
    return found


def check_named(mention: Mention) -> list[str]:
    if mention.command is not None:
        if mention.option not in OPTIONS[mention.command]:
            return [f"{mention.where}: `{mention.command}` has no {mention.option}"]
        return []
    if mention.option not in EVERY_OPTION:
        return [f"{mention.where}: no command has {mention.option}"]
    return []


def check_in_package(mention: Mention, module: str, function: str | None) -> list[str]:
    if mention.command is not None:
        return check_named(mention)
    if module.startswith("device_provisioning.cli") and function is not None:
        showing = [command for command, (run, _) in REACH.items() if (module, function) in run]
        missing = [command for command in showing if mention.option not in OPTIONS[command]]
        if missing:
            return [f"{mention.where}: {mention.option} is suggested to `{'`, `'.join(missing)}`, which lack(s) it"]
        if showing:
            return []
    elif not module.startswith("device_provisioning.cli"):
        showing = [command for command, (_, imported) in REACH.items() if module in imported]
        if showing and not any(mention.option in OPTIONS[command] for command in showing):
            return [f"{mention.where}: {mention.option} is suggested to `{'`, `'.join(showing)}`; none has it"]
        if showing:
            return []
    return check_named(mention)


def test_every_option_named_exists_on_its_command() -> None:
    assert problems() == []


def test_the_reachability_is_real() -> None:
    # image merge and flash share the build-directory reader, and only flash offers --no-firmware; doctor reads
    # logs, never a serial port.
    assert ("device_provisioning.cli.flash", "_project_build") in REACH["image merge"][0]
    assert ("device_provisioning.cli.flash", "_project_build") in REACH["flash"][0]
    assert ("device_provisioning.cli.flash", "_flash_build") not in REACH["image merge"][0]
    assert "device_provisioning.flashing.esptool_device" in REACH["flash"][1]
    assert "device_provisioning.flashing.esptool_device" in REACH["batch flash"][1]
    assert "device_provisioning.factory.station" not in REACH["doctor"][1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run `device-provisioning image merge --no-firmware`", ["`image merge` has no --no-firmware"]),
        ("device-provisioning partitions show t.csv --project x | head", ["`partitions show` has no --project"]),
        ("then `flash --no-firmware`; cdk deploy --all", []),
        ("pass --no-such-option", ["no command has --no-such-option"]),
        ("idf.py --port /dev/ttyUSB0 flash; pytest -m hardware --port X", []),
        ("device-provisioning batch flash b \\\n   --ports A --baud 115200", []),
    ],
)
def test_the_check_reads_command_lines(text: str, expected: list[str]) -> None:
    found = [problem.split(": ", 1)[1] for m in mentions(text, "t") for problem in check_named(m)]
    assert found == expected

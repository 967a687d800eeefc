"""datasette's meta-tests: every hook is documented with its exact signature, and tested."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import re
import unicodedata
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

import pytest

from bitmusa_hookspecs import HOOK_NAMES, specs
from conftest import ROOT, TESTS

HOOKS_MD = ROOT / "docs" / "hooks.md"


def gen_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hooks", ROOT / "docs" / "gen_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_names_are_exactly_the_hookspecs() -> None:
    declared = {name for name in dir(specs) if hasattr(getattr(specs, name), "bitmusa_spec")}
    assert declared == set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    text = HOOKS_MD.read_text()
    assert f"\n## {hook}\n" in text
    assert f"\n{gen_hooks().signature(hook)}\n" in text


def test_hooks_md_is_generated_from_current_docstrings() -> None:
    assert HOOKS_MD.read_text() == gen_hooks().render(), "run: python docs/gen_hooks.py"


def test_the_ccxt_page_tables_every_unified_method_as_has_says() -> None:
    """Every key of ccxt's ``has``, supported or not and why, as the class says today."""
    spec = importlib.util.spec_from_file_location("gen_ccxt", ROOT / "docs" / "gen_ccxt.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "ccxt.md").read_text()
    assert page == module.render(), "run: python docs/gen_ccxt.py"
    from bitmusa_plugin._ccxt import bitmusa

    for key, supported in bitmusa().has.items():
        assert f"| `{key}` | {'yes' if supported else 'no'} |" in page
    # every option the drop-in adds to ccxt's is in the page
    import ccxt.async_support

    for option in set(bitmusa().options) - set(ccxt.async_support.Exchange().options):
        assert f"`{option}`" in page or f"options.{option}" in page, option


def test_the_command_reference_is_generated_from_the_cli_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("COLUMNS", "100")
    page = (ROOT / "docs" / "cli-reference.md").read_text()
    assert page == module.render(), "run: python docs/gen_cli.py"
    for flag in (
        "--keepalive-interval",
        "--rotate-after",
        "--keep-listen-key",
        "--record",
        "--insecure",
        "--strict-plugins",
        "--time-scale",
        "--rest-fault",
    ):
        assert flag in page


def _test_trees() -> list[ast.AST]:
    """Every test module and the helpers the tests share (``recording.py``'s recording
    plugin), and every plugin written out as a string by a test (a string constant that
    uses ``hookimpl`` and parses as Python)."""
    trees: list[ast.AST] = []
    for path in sorted(Path(TESTS).rglob("*.py")):
        if path.name == "test_docs.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        trees.append(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and "hookimpl" in text:
                with contextlib.suppress(SyntaxError):
                    trees.append(ast.parse(text))
    return trees


def _is_hookimpl(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    return name == "hookimpl"


def _exercises(tree: ast.AST, hook: str) -> bool:
    """A plugin implementing the hook (``@hookimpl def <hook>``), or code calling or
    naming it as an attribute (``pm.hook.<hook>(...)``, ``plugin.<hook>``); a comment
    or a docstring does not count."""
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == hook
            and any(_is_hookimpl(d) for d in node.decorator_list)
        ):
            return True
        if isinstance(node, ast.Attribute) and node.attr == hook:
            return True
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == hook:
            return True
    return False


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    assert any(_exercises(tree, hook) for tree in _test_trees()), f"no test exercises {hook}"


def test_the_exercise_check_ignores_comments_and_docstrings() -> None:
    source = (
        '"""on_wallet is mentioned here."""\n'
        "# on_wallet in a comment\n"
        "def on_wallet(balance):  # not a hookimpl\n"
        "    return 'on_wallet'\n"
    )
    assert not _exercises(ast.parse(source), "on_wallet")
    assert _exercises(ast.parse("@hookimpl\ndef on_wallet(balance): ..."), "on_wallet")
    assert _exercises(
        ast.parse("@bm.hookimpl(tryfirst=True)\nasync def on_wallet(b): ..."), "on_wallet"
    )
    assert _exercises(ast.parse("pm.hook.on_wallet(balance=b, event=e)"), "on_wallet")


def test_every_frame_error_kind_is_documented() -> None:
    from bitmusa_hookspecs import FRAME_ERROR_KINDS

    assert set(FRAME_ERROR_KINDS) <= set(gen_hooks().ERROR_KINDS)


# -- links -------------------------------------------------------------------------------

PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where a link is not a link."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def _anchors(page: Path) -> set[str]:
    """The ids of ``page``'s headings, as mkdocs (Python-Markdown's toc) and GitHub make
    them: a link may be followed by either."""
    anchors: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if fenced or heading is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).replace("`", "")
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        mkdocs = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
        github = re.sub(r" ", "-", re.sub(r"[^\w\- ]", "", text.strip().lower()))
        anchors |= {mkdocs, github}
    return anchors


def _relative_links() -> list[tuple[Path, str]]:
    links = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto:
            links.append((page, target))
    return links


@pytest.mark.parametrize(
    ("page", "target"),
    _relative_links(),
    ids=[f"{p.name}->{t}" for p, t in _relative_links()],
)
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (page.parent / unquote(path)).resolve() if path else page
    assert resolved.exists(), f"{page.name} links to missing {path}"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {path}"


def test_the_link_check_finds_links_and_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# The `bitmusa-plugin` command\n\n## Exit status\n\n```\n# not a heading\n```\n"
        "[a](other.md#part) and `[not](a-link.md)` and ![img](img/x.png)\n"
    )
    assert {"the-bitmusa-plugin-command", "exit-status"} <= _anchors(page)
    assert "not-a-heading" not in _anchors(page)
    assert LINK.findall(_prose(page.read_text())) == ["other.md#part", "img/x.png"]


# -- the command line ---------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from bitmusa_plugin._cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _table(text: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header row starts with ``header``, as cells."""
    rows: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not set("".join(cells)) <= set("-: "):  # the |---| line
                rows.append(cells)
    return rows


def test_every_command_is_in_the_command_table_of_cli_md() -> None:
    rows = _table((ROOT / "docs" / "cli.md").read_text(), "| command |")
    documented = {re.match(r"`([\w-]+)", row[0]).group(1) for row in rows}  # type: ignore[union-attr]
    assert set(_subparsers()) <= documented
    assert documented <= set(_subparsers()), "cli.md documents a command that does not exist"


def test_every_exit_status_is_documented_in_cli_md() -> None:
    from bitmusa_plugin._cli import common

    constants = {
        name: value
        for name, value in vars(common).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    rows = _table((ROOT / "docs" / "cli.md").read_text(), "| status |")
    documented = {row[1].strip("`"): int(row[0]) for row in rows}
    assert documented == constants


@pytest.mark.parametrize("command", ["", *sorted(_subparsers())])
def test_no_help_says_default_none(command: str) -> None:
    """argparse prints ``(default: None)`` for an option whose default is worked out
    later: the help must say the real one."""
    parser = _subparsers()[command] if command else None
    if parser is None:
        from bitmusa_plugin._cli import build_parser

        parser = build_parser()
    text = parser.format_help()
    assert "default: None" not in text
    assert "(default: )" not in text


def test_every_option_of_a_command_is_in_its_row_of_cli_md() -> None:
    """The command table's usage column lists every option the command takes (the help
    and verbosity flags, and options hidden from the help, aside), so that it never falls
    behind the parser."""
    rows = _table((ROOT / "docs" / "cli.md").read_text(), "| command |")
    usage: dict[str, str] = {}
    for row in rows:
        name = re.match(r"`([\w-]+)", row[0]).group(1)  # type: ignore[union-attr]
        usage[name] = usage.get(name, "") + row[0]
    missing = {
        command: sorted(
            flag
            for action in parser._actions
            if action.help != argparse.SUPPRESS
            for flag in action.option_strings
            if flag.startswith("--")
            and flag not in ("--help", "--verbose")
            and flag not in usage[command]
        )
        for command, parser in _subparsers().items()
    }
    assert {command: flags for command, flags in missing.items() if flags} == {}

"""The docs hold together: every relative link in README.md, docs/*.md and sdk/README.md leads
somewhere (a file, a folder, a heading), every `TOLLGATE_*` setting they name exists, and their
Python compiles and calls only SDK methods that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tollgate

from api.settings import Settings

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "sdk" / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SETTING = re.compile(r"TOLLGATE_[A-Z0-9_{},<>]*[A-Z0-9}>]")
SHORT_SETTING = re.compile(r"…(_[A-Z0-9_]+)")  # "…_READ_TIMEOUT_SECONDS" after a full name
PYTHON = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
CLIENT_CLASSES = {"Tollgate", "AsyncTollgate", "Client", "AsyncClient"}


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def test_the_docs_are_all_here():
    names = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert {"keys-and-caps.md", "calling-models.md", "threads-and-tools.md",
            "search-and-jobs.md", "usage-and-billing.md", "operations.md"} <= names  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (
            anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved)
        ):
            broken.append(target)
    assert not broken


def _expand(name: str) -> list[str]:
    """`TOLLGATE_{A,B}_KEY` is two names; `<PROVIDER>` stands for any word."""
    braces = re.search(r"\{([^}]*)\}", name)
    if braces is None:
        return [name]
    return [
        expanded
        for choice in braces.group(1).split(",")
        for expanded in _expand(name[: braces.start()] + choice + name[braces.end() :])
    ]


def _known(name: str, fields: set[str], literal: str) -> bool:
    if name in literal:  # read by name: TOLLGATE_CONFIG, the SDK's TOLLGATE_API_KEY
        return True
    pattern = re.escape(name.removeprefix("TOLLGATE_").lower())
    pattern = re.sub(r"<[a-z]+>", "[a-z0-9]+", pattern)
    return any(re.fullmatch(pattern, field) for field in fields)


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_documented_setting_exists(page: Path):
    fields = set(Settings.model_fields)
    literal = (ROOT / "api" / "settings.py").read_text() + (
        ROOT / "sdk" / "src" / "tollgate" / "_client.py"
    ).read_text()
    text = page.read_text()
    names = {expanded for found in SETTING.findall(text) for expanded in _expand(found)}
    unknown = sorted(name for name in names if not _known(name, fields, literal))
    shorts = sorted(
        short for short in set(SHORT_SETTING.findall(text))
        if not any(f"_{field}".endswith(short.lower()) for field in fields)
    )  # fmt: skip
    assert (unknown, shorts) == ([], [])


def _chain(node: ast.expr) -> list[str]:
    """`client.keys.create` as ["client", "keys", "create"]; [] for anything else."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    return [node.id, *names] if isinstance(node, ast.Name) else []


def _makes_client(value: ast.expr, clients: set[str]) -> bool:
    if not isinstance(value, ast.Call):
        return False
    chain = _chain(value.func)
    return (chain[:1] == ["tollgate"] and chain[-1] in CLIENT_CLASSES) or (
        len(chain) == 2 and chain[0] in clients and chain[1] == "with_options"
    )


def _sdk_calls(tree: ast.AST, clients: set[str]) -> list[list[str]]:
    """Calls of methods on Tollgate clients; `clients` gains the names the code binds to one."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _makes_client(node.value, clients):
            clients |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if isinstance(item.optional_vars, ast.Name) and _makes_client(
                    item.context_expr, clients
                ):
                    clients.add(item.optional_vars.id)
    return [
        chain[1:]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and len(chain := _chain(node.func)) > 2
        and chain[0] in clients
    ]


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_python_compiles_and_calls_sdk_methods_that_exist(page: Path):
    client = tollgate.Tollgate(api_key="qlk_test_docs")
    clients: set[str] = set()  # a page's blocks run in order, sharing their names
    missing = []
    for index, code in enumerate(PYTHON.findall(page.read_text())):
        tree = compile(code, f"{page.name}: python block {index + 1}", "exec", ast.PyCF_ONLY_AST)
        for chain in _sdk_calls(tree, clients):
            target: object = client
            for name in chain:
                target = getattr(target, name, None)
            if not callable(target):
                missing.append(".".join(chain))
    assert not missing

"""Tenant scoping lives in repositories: no `select(<TenantModel>)` outside `repository.py`.

Inside a repository, queries start from the tenant-scoped `base()`; the few that cannot (finding
a key by its secret before the tenant is known) are named `*_unscoped`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from api.models import Base

API = Path(__file__).resolve().parents[2] / "api"
TENANT_MODELS = {
    mapper.class_.__name__
    for mapper in Base.registry.mappers
    if "tenant_id" in mapper.columns or mapper.class_.__name__ == "KeySecret"
}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if func.name.endswith("_unscoped") or func.name == "base":
            continue
        for call in ast.walk(func):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in {"select", "update", "delete"}
                and any(isinstance(a, ast.Name) and a.id in TENANT_MODELS for a in call.args)
            ):
                found.append(f"{path.name}:{call.lineno} in {func.name}")
    return found


class TestTenantScope:
    def test_known_tenant_models(self):
        assert {"ApiKey", "UsageEvent", "KeySecret"} <= TENANT_MODELS

    def test_no_unscoped_queries_of_tenant_models(self):
        offences = [
            o for path in API.rglob("*.py") if path.name != "repository.py" for o in _offences(path)
        ]
        assert offences == []

    def test_the_lint_catches_an_offence(self, tmp_path: Path):
        bad = tmp_path / "service.py"
        bad.write_text(
            "def leak():\n    return select(ApiKey)\n\ndef x_unscoped():\n    select(ApiKey)\n"
        )
        assert _offences(bad) == ["service.py:2 in leak"]

"""The request-body depth bound: exact at the limit, and never recursive itself."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api.errors import InvalidRequest
from api.kit.json_depth import MAX_DEPTH, check_depth, may_nest_too_deep, too_deep


def _nested(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for level in range(depth):
        value = {"a\n": value} if level % 2 else [value, "[{\n  "]
    return value


class TestJsonDepth:
    @pytest.mark.parametrize("leaf", [1, 10**30], ids=["orjson", "walked"])
    def test_the_limit_itself_passes_and_one_more_is_refused(self, leaf: int):
        # 10**30 is JSON orjson does not write: the check walks the levels instead.
        assert not too_deep(_nested(MAX_DEPTH, leaf))
        assert too_deep(_nested(MAX_DEPTH + 1, leaf))
        assert not too_deep(_nested(MAX_DEPTH, {}))  # an empty container holds nothing deeper

    def test_refused_with_a_400(self):
        raw = orjson.dumps(_nested(MAX_DEPTH + 1))
        with pytest.raises(InvalidRequest, match="nests deeper than"):
            check_depth(raw, orjson.loads(raw))

    def test_few_brackets_skip_the_check(self):
        assert not may_nest_too_deep(b'{"model": "m", "messages": [{"role": "user"}]}')
        assert may_nest_too_deep(b"[" * (MAX_DEPTH + 1))

    def test_wide_bodies_and_scalars_are_fine(self):
        wide = {"messages": [{"role": "user", "content": [{"type": "text"}]}] * 10_000}
        raw = orjson.dumps(wide)
        assert may_nest_too_deep(raw)
        check_depth(raw, wide)
        assert not too_deep("text")

    def test_far_deeper_than_the_recursion_limit(self):
        assert too_deep(_nested(100_000))

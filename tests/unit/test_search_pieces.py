"""Search's pure pieces: what of a message is searchable, and filters as job arguments."""

from __future__ import annotations

import uuid

from api.search.store import VectorFilter
from api.search.text import message_text


class TestMessageText:
    def test_text_blocks_and_tool_results_count_the_rest_does_not(self):
        content = [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "First."},
            {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
            {"type": "text", "text": "  "},
            {"type": "text", "text": "Second."},
        ]
        assert message_text(content) == "First.\nSecond."

    def test_a_tool_result_is_its_content(self):
        assert message_text([{"type": "tool_result", "content": "12 degrees"}]) == "12 degrees"
        listed = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
        assert message_text([{"type": "tool_result", "content": listed}]) == "a\nb"

    def test_a_message_with_nothing_to_search_is_empty(self):
        assert message_text([{"type": "tool_use", "id": "t", "name": "x", "input": {}}]) == ""
        assert message_text([]) == ""
        assert message_text([{"type": "text", "text": 3}, "junk"]) == ""  # type: ignore[list-item]


class TestVectorFilter:
    def test_a_filter_survives_a_job_argument(self):
        where = VectorFilter(uuid.uuid4(), key_id=uuid.uuid4(), role="tool", start=1.5, end=9.0)
        assert VectorFilter.from_dict(where.to_dict()) == where
        bare = VectorFilter(uuid.uuid4())
        assert VectorFilter.from_dict(bare.to_dict()) == bare
        assert bare.matches() == [("tenant_id", str(bare.tenant_id))]

"""The soak's one-minute version (`bench/soak.py`, whose ten minutes are a bench command): one
API process and one worker under eight clients' mixed traffic, every endpoint family, streams,
thread turns with a webhook tool, and jobs."""

from __future__ import annotations

import pytest

from bench.soak import soak


@pytest.mark.timeout(300)  # a minute of traffic, then the ledger settles
def test_a_minute_of_mixed_traffic_is_all_answered_and_billed_exactly():
    report = soak(60)
    assert report["requests"] > 1000  # about 130 a second here
    assert report["errors_per_minute"] == [0] * len(report["errors_per_minute"])
    assert report["ledger_exact"], report["ledger_differences"]
    # Memory: after the first samples (imports, caches, the tokenizer), no steady growth. The
    # ten-minute run reports the slope; a minute is too short for one.
    rss = [sample["api"] for sample in report["rss_mb"]]
    assert max(rss[2:]) - rss[2] < 30, rss

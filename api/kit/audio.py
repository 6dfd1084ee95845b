"""How long an audio file plays, from its container headers (mutagen), for holding the worst
case of a transcription before the call (SPEC §5.12)."""

from __future__ import annotations

import io
import math

# The lowest bitrate a codec OpenAI decodes goes down to (Opus: 6 kbit/s): no file of N bytes
# plays longer than N * 8 / this many seconds.
LOWEST_BITRATE = 6_000
# Bytes of a file that may be tags and headers rather than audio (not counted when the
# duration is bounded by the size).
_HEADER_ALLOWANCE = 4_096


def duration_seconds(data: bytes) -> float | None:
    """How long the audio in `data` plays, from its container headers; None if unreadable.
    Never less than the file's size at the bitrate its headers state."""
    import mutagen

    try:
        parsed = mutagen.File(io.BytesIO(data))
    except Exception:  # mutagen raises its own errors, and others on damaged files
        return None
    info = getattr(parsed, "info", None)
    length = getattr(info, "length", None)
    if not isinstance(length, int | float) or not math.isfinite(length) or length <= 0:
        return None
    bitrate = getattr(info, "bitrate", 0)
    if isinstance(bitrate, int | float) and bitrate > 0:
        length = max(length, max(len(data) - _HEADER_ALLOWANCE, 0) * 8 / bitrate)
    return float(length)


def worst_seconds(data: bytes, limit_bytes: int) -> int:
    """The most seconds an upstream can bill for `data` (see the module docstring)."""
    seconds = duration_seconds(data)
    if seconds is None:
        seconds = limit_bytes * 8 / LOWEST_BITRATE
    return max(math.ceil(seconds), 1)

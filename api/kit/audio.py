"""How long an audio file plays, from its container headers (mutagen), for holding the worst
case of a transcription before the call (SPEC §5.12)."""

from __future__ import annotations

import io
import math

# The lowest bitrate a compressed file is held at (Opus's floor: 6 kbit/s; MPEG's is 8): a
# file of N bytes is held as N * 8 / this many seconds at least. Codecs that compress silence
# further (FLAC's constant subframes, Opus's DTX) can play longer: see docs/decisions/0006.
LOWEST_BITRATE = 6_000
# Bytes of a file that may be tags and headers rather than audio (not counted when the
# duration is bounded by the size).
_HEADER_ALLOWANCE = 4_096


def duration_seconds(data: bytes) -> float | None:
    """How long the audio in `data` can play, from its container headers; None if unreadable.

    Uncompressed PCM (WAV, AIFF) plays exactly its size at its header's byte rate, so never
    less than that. A compressed file's headers state a length and a bitrate its frames need
    not keep (an MP3's Xing header, an Ogg stream muxed with another): its bound is its size at
    LOWEST_BITRATE, whatever its headers say, unless they say longer."""
    import mutagen
    from mutagen.aiff import AIFF
    from mutagen.wave import WAVE

    try:
        parsed = mutagen.File(io.BytesIO(data))
    except Exception:  # mutagen raises its own errors, and others on damaged files
        return None
    info = getattr(parsed, "info", None)
    length = getattr(info, "length", None)
    if not isinstance(length, int | float) or not math.isfinite(length) or length <= 0:
        return None
    audio = max(len(data) - _HEADER_ALLOWANCE, 0) * 8
    bitrate = getattr(info, "bitrate", 0)
    pcm = isinstance(parsed, WAVE | AIFF)
    if pcm and isinstance(bitrate, int | float) and bitrate > 0:
        return float(max(length, audio / bitrate))
    return float(max(length, audio / LOWEST_BITRATE))


def worst_seconds(data: bytes, limit_bytes: int) -> int:
    """The most seconds an upstream can bill for `data` (see the module docstring)."""
    seconds = duration_seconds(data)
    if seconds is None:
        seconds = limit_bytes * 8 / LOWEST_BITRATE
    return max(math.ceil(seconds), 1)

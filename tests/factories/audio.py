"""Audio files for tests that upload them."""

from __future__ import annotations

import io
import math
import struct
import wave


def tone_wav(seconds: float, rate: int = 16_000) -> bytes:
    """A real WAV file of a 440 Hz tone."""
    frames = int(seconds * rate)
    samples = (int(12_000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()

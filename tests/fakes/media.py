"""What the fake upstreams' embedding, audio and image endpoints share: the deterministic rules
they bill by, the bytes they answer with, and what they record.

Every number a fake reports is computed here, so a test can compute the expected usage on its
own (or call these functions):

- Embedding vectors: `embedding_vector(model, item, dims)`: `dims` float32 values of a unit
  vector drawn (Gaussian, then normalised) from `random.Random(seed)`, the seed being the first
  8 bytes (big-endian) of sha256(f"{model}\\n{json.dumps(item)}"), `item` one input (a string or
  a list of token ids). Base64 encoding is those float32 values, little-endian.
- Audio duration: `audio_seconds(data)`: a WAV (RIFF/WAVE) lasts nframes / framerate as
  Python's `wave` module reads it; any other format lasts `NON_WAV_SECONDS` (1.0).
- Transcript: `transcript_text(seconds)`: max(1, ceil(seconds * 2)) words.
- Audio tokens (gpt-4o transcription input, gpt-4o-mini-tts output): ceil(seconds * 10).
- Text tokens (gpt-4o transcription prompt and text, speech input and instructions, image
  prompts): o200k_base, special tokens read as text. Embedding inputs: cl100k_base, likewise.
- Speech: `speech_seconds(input, speed)` = len(input) / 15 / speed; `speech_audio(fmt, ...)`
  is 24 kHz 16-bit mono silence for pcm and wav (wav: a 44-byte header first), otherwise a
  format's magic bytes padded with zeros to ceil(seconds * SPEECH_BYTES_PER_SECOND[fmt]).
- GPT image output tokens per image: `IMAGE_OUTPUT_TOKENS[quality][size]` (OpenAI's table);
  each input image of an edit: `EDIT_IMAGE_TOKENS`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import random
import struct
import sys
import wave
import zlib
from array import array
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import bpe_openai
from aiohttp import web

CL100K = bpe_openai.get_encoding("cl100k_base")
O200K = bpe_openai.get_encoding("o200k_base")

EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
EMBEDDING_MAX_INPUTS = 2048
EMBEDDING_MAX_INPUT_TOKENS = 8192
EMBEDDING_MAX_REQUEST_TOKENS = 300_000

GEMINI_EMBEDDING_DIMENSIONS = {"gemini-embedding-001": 3072, "text-embedding-004": 768,
                               "embedding-001": 768}  # fmt: skip
GEMINI_MAX_BATCH = 100

NON_WAV_SECONDS = 1.0
AUDIO_TOKENS_PER_SECOND = 10
WORDS_PER_SECOND = 2
MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's upload limit for audio
MAX_IMAGE_UPLOAD_BYTES = 50 * 1024 * 1024
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
LANGUAGES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
             "ja": "japanese", "zh": "chinese", "pt": "portuguese", "nl": "dutch"}  # fmt: skip

SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
SPEECH_CHARS_PER_SECOND = 15
SPEECH_SAMPLE_RATE = 24_000
SPEECH_MAX_INPUT = 4096
SPEECH_CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                        "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
SPEECH_BYTES_PER_SECOND = {"mp3": 16_000, "opus": 4_000, "aac": 16_000, "flac": 24_000}
SPEECH_MAGIC = {"mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00", "opus": b"OggS\x00\x02",
                "aac": b"\xff\xf1\x50\x80", "flac": b"fLaC"}  # fmt: skip
SPEECH_CHUNK_BYTES = 4096

IMAGE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
IMAGE_QUALITIES = {
    "dall-e-2": ("standard",),
    "dall-e-3": ("standard", "hd"),
    "gpt-image": ("low", "medium", "high", "auto"),
}
# gpt-image-1's output tokens per image, as OpenAI publishes them.
IMAGE_OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
EDIT_IMAGE_TOKENS = 194  # per input image of an edit (65 base + 129 for one 512 px tile)
MAX_EDIT_IMAGES = 16


@dataclass
class Upload:
    """One uploaded file of a multipart request."""

    field: str  # the form field it came in ("file", "image", "image[]", "mask")
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class MediaSeen:
    """A request to an embedding, audio or image endpoint, and what the fake answered."""

    path: str
    body: dict[str, Any]  # the JSON body, or a multipart request's form fields
    files: list[Upload] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    usage: dict[str, Any] | None = None  # the usage object the answer carried, if any
    seconds: float | None = None  # the audio duration the fake measured (or spoke)
    images: int = 0  # how many images the answer carried


@dataclass
class StreamRecord:
    """A streamed answer (speech audio, speech SSE, transcription SSE) as far as it got."""

    path: str
    model: str
    total_bytes: int  # what the whole answer would have been
    bytes_sent: int = 0
    events_sent: int = 0
    completed: bool = False
    disconnected: bool = False  # the client went away before the end


class MultipartTooLarge(Exception):
    pass


# errors --------------------------------------------------------------------------------------
def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """OpenAI's error shape: every key present, null when unset."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


def model_not_found(model: str) -> web.Response:
    return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                        code="model_not_found")  # fmt: skip


def media_failure(mode: str) -> web.Response | None:
    """The answer `media_mode` forces ("error500", "error400"); None: answer normally."""
    if mode == "error500":
        return openai_error(500, "The server had an error while processing your request. Sorry "
                            "about that!", type_="server_error")  # fmt: skip
    if mode == "error400":
        return openai_error(400, "Invalid request.")
    return None


# request bodies ------------------------------------------------------------------------------
async def read_json(request: web.Request) -> Any:
    """The JSON body, read past aiohttp's 1 MiB `client_max_size` (a large embedding batch)."""
    return json.loads(await request.content.read())


async def read_form(
    request: web.Request, limit: int
) -> tuple[dict[str, str | list[str]], list[Upload]]:
    """A multipart body's fields (a repeated field as a list) and files. It is read past the
    application's `client_max_size`; beyond `limit` bytes: MultipartTooLarge. (Parsed here:
    aiohttp's reader warns of a deprecation of its own on part bodies of unknown length.)"""
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise MultipartTooLarge(len(body))
    header = Message()
    header["Content-Type"] = request.headers.get("Content-Type", "")
    boundary = header.get_boundary()
    if not boundary:
        raise ValueError("multipart body without a boundary")
    fields: dict[str, str | list[str]] = {}
    files: list[Upload] = []
    for raw in (b"\r\n" + bytes(body)).split(b"\r\n--" + boundary.encode())[1:]:
        if raw.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            part[name.strip()] = value.strip()
        name = str(part.get_param("name", "", header="content-disposition"))
        filename = part.get_filename()
        if filename is not None:
            files.append(Upload(name, filename, part.get("Content-Type"), data))
            continue
        value = data.decode("utf-8")
        previous = fields.get(name)
        if previous is None:
            fields[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            fields[name] = [previous, value]
    return fields, files


def too_large(total: int, limit: int) -> web.Response:
    return openai_error(413, f"Maximum content size limit ({limit}) exceeded ({total} bytes "
                        "read)", type_="server_error")  # fmt: skip


def field_list(fields: dict[str, str | list[str]], *names: str) -> list[str]:
    """Every value of the first of `names` present (`timestamp_granularities[]` and the like)."""
    for name in names:
        value = fields.get(name)
        if value is not None:
            return value if isinstance(value, list) else [value]
    return []


def field_str(fields: dict[str, str | list[str]], name: str) -> str | None:
    value = fields.get(name)
    return value[-1] if isinstance(value, list) else value


# tokens --------------------------------------------------------------------------------------
def o200k_tokens(text: str | None) -> int:
    return len(O200K.encode_ordinary(text)) if text else 0


def cl100k_tokens(text: str) -> int:
    return len(CL100K.encode_ordinary(text))


# embeddings ----------------------------------------------------------------------------------
def embedding_vector(model: str, item: Any, dims: int) -> list[float]:
    """A unit vector of `dims` float32 values, the same for the same model and input."""
    digest = hashlib.sha256(f"{model}\n{json.dumps(item)}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(array("f", [v / norm for v in values]))


def embedding_base64(vector: list[float]) -> str:
    """OpenAI's `encoding_format: "base64"`: the float32 values, little-endian."""
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def decode_embedding_base64(text: str) -> list[float]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        packed.byteswap()
    return list(packed)


def embedding_inputs(given: Any) -> list[str | list[int]] | None:
    """The items of an embeddings `input` (one embedding each), or None when it is invalid:
    a string, a list of strings, a list of token ids (one input), a list of token-id lists."""

    def token_ids(value: Any) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
        )

    if isinstance(given, str):
        return [given] if given else None
    if not isinstance(given, list) or not given:
        return None
    if all(isinstance(item, str) and item for item in given):
        return list(given)
    if token_ids(given):
        return [list(given)]
    if all(token_ids(item) for item in given):
        return [list(item) for item in given]
    return None


def embedding_item_tokens(item: str | list[int]) -> int:
    """What one input counts: its cl100k_base tokens, or its number of token ids."""
    return cl100k_tokens(item) if isinstance(item, str) else len(item)


# audio ---------------------------------------------------------------------------------------
def is_wav(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def audio_seconds(data: bytes) -> float | None:
    """A WAV's duration, nframes / framerate (None when it cannot be read as a WAV)."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate else None
    except (wave.Error, EOFError, struct.error):
        return None


def wav_bytes(seconds: float, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV of silence lasting `seconds` (round(seconds * rate) frames)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * round(seconds * rate))
    return out.getvalue()


def audio_tokens(seconds: float) -> int:
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


def transcript_text(seconds: float) -> str:
    count = max(1, math.ceil(seconds * WORDS_PER_SECOND))
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(count)).capitalize() + "."


def transcript_pieces(text: str) -> list[str]:
    """The deltas of a transcript stream: three words each, joined they are the text."""
    words = text.split(" ")
    pieces = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
    return [piece if i == 0 else " " + piece for i, piece in enumerate(pieces)]


def transcription_token_usage(seconds: float, prompt: str | None, text: str,
                              audio_override: int | None = None) -> dict[str, Any]:  # fmt: skip
    """gpt-4o(-mini)-transcribe's usage: audio and prompt tokens in, the text's tokens out."""
    audio = audio_tokens(seconds) if audio_override is None else audio_override
    text_in = o200k_tokens(prompt)
    out = o200k_tokens(text)
    return {"type": "tokens", "input_tokens": audio + text_in,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": audio},
            "output_tokens": out, "total_tokens": audio + text_in + out}  # fmt: skip


def segments(text: str, seconds: float) -> list[dict[str, Any]]:
    """Whisper's verbose segments: 20 words (10 s of the transcript's pace) each."""
    words = text.split(" ")
    out = []
    per = 10 * WORDS_PER_SECOND
    for index, start in enumerate(range(0, len(words), per)):
        piece = " " + " ".join(words[start : start + per])
        begin = min(seconds, index * 10.0)
        out.append({"id": index, "seek": index * 1000, "start": round(begin, 2),
                    "end": round(min(seconds, begin + 10.0), 2), "text": piece,
                    "tokens": O200K.encode_ordinary(piece), "temperature": 0.0,
                    "avg_logprob": -0.2, "compression_ratio": 1.2,
                    "no_speech_prob": 0.01})  # fmt: skip
    return out


def words(text: str, seconds: float) -> list[dict[str, Any]]:
    step = 1 / WORDS_PER_SECOND
    return [{"word": w.strip("."), "start": round(min(seconds, i * step), 2),
             "end": round(min(seconds, (i + 1) * step), 2)}
            for i, w in enumerate(text.split(" "))]  # fmt: skip


def _stamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(text: str, seconds: float, kind: str) -> str:
    """The transcript as SRT or WebVTT cues, one per segment."""
    cues = segments(text, seconds)
    if kind == "srt":
        return "".join(f"{c['id'] + 1}\n{_stamp(c['start'], ',')} --> {_stamp(c['end'], ',')}\n"
                       f"{c['text'].strip()}\n\n" for c in cues)  # fmt: skip
    return "WEBVTT\n\n" + "".join(
        f"{_stamp(c['start'], '.')} --> {_stamp(c['end'], '.')}\n{c['text'].strip()}\n\n"
        for c in cues
    )


# speech --------------------------------------------------------------------------------------
def speech_seconds(text: str, speed: float = 1.0) -> float:
    return len(text) / SPEECH_CHARS_PER_SECOND / speed


def speech_audio(fmt: str, text: str, speed: float = 1.0) -> bytes:
    """The whole answer of `/audio/speech` for `text` in `fmt`, deterministic in its length."""
    seconds = speech_seconds(text, speed)
    if fmt in ("pcm", "wav"):
        if fmt == "wav":
            return wav_bytes(seconds, SPEECH_SAMPLE_RATE)
        return b"\x00\x00" * round(seconds * SPEECH_SAMPLE_RATE)
    magic = SPEECH_MAGIC[fmt]
    size = max(len(magic), math.ceil(seconds * SPEECH_BYTES_PER_SECOND[fmt]))
    return magic + b"\x00" * (size - len(magic))


def speech_chunks(audio: bytes) -> list[bytes]:
    """The pieces the audio is sent in: at most SPEECH_CHUNK_BYTES, at least three when it can."""
    size = max(1, min(SPEECH_CHUNK_BYTES, math.ceil(len(audio) / 3)))
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def speech_usage(text: str, instructions: str | None, speed: float,
                 output_override: int | None = None) -> dict[str, int]:  # fmt: skip
    """gpt-4o-mini-tts's usage in `speech.audio.done`: text in, audio tokens out."""
    given = o200k_tokens(text) + o200k_tokens(instructions)
    out = audio_tokens(speech_seconds(text, speed)) if output_override is None else output_override
    return {"input_tokens": given, "output_tokens": out, "total_tokens": given + out}


# images --------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tiny_png() -> bytes:
    """A valid 1x1 transparent RGBA PNG."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00"))
            + _png_chunk(b"IEND", b""))  # fmt: skip


TINY_PNG = tiny_png()
TINY_PNG_BASE64 = base64.b64encode(TINY_PNG).decode()


def image_family(model: str) -> str | None:
    if model in ("dall-e-2", "dall-e-3"):
        return model
    return "gpt-image" if model.startswith("gpt-image") else None


def image_usage(prompt: str, images: int, quality: str, size: str,
                input_images: int = 0) -> dict[str, Any]:  # fmt: skip
    """A GPT image answer's usage: prompt (and input image) tokens in, `images` images out."""
    text_in = o200k_tokens(prompt)
    image_in = input_images * EDIT_IMAGE_TOKENS
    out = images * IMAGE_OUTPUT_TOKENS[quality][size]
    return {"input_tokens": text_in + image_in, "output_tokens": out,
            "total_tokens": text_in + image_in + out,
            "input_tokens_details": {"text_tokens": text_in, "image_tokens": image_in},
            "output_tokens_details": {"image_tokens": out, "text_tokens": 0}}  # fmt: skip

"""Record what Claude Code sends to `/v1/messages`, for the translated path to replay.

    .venv/bin/python -m tests.e2e.clients.record_claude_code

runs the pinned `claude -p` straight against the scripted Anthropic fake (no Tollgate in
between, so the requests are exactly Claude Code's), for a Claude, a GPT and a Gemini model name
(Claude Code shapes its requests by model: thinking, effort, mid-conversation system messages),
through one continued session each: a prompt; a `Read` round trip; a `Read` of a missing file (an
error tool result); a `Read` of an image and of a PDF (an image, a document in a tool result). It
writes every request's path, query string, `anthropic-*` headers and body to
tests/fixtures/clients/claude_code.json.

Claude Code's own long texts (its system prompt, reminders and tool descriptions) are replaced
by a placeholder of the same kind and their length: the fixture keeps the shapes, not the prose.
Temporary paths and per-install ids are replaced by fixed ones.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from tests.e2e.clients.harness import EgressTrap, clean_env, node_binary, pdf, run
from tests.e2e.clients.scripted import ScriptedAnthropic
from tests.fakes import anthropic_upstream

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "clients" / "claude_code.json"
MODELS = ("claude-sonnet-4-20250514", "gpt-4.1", "gemini-2.5-flash")
HOME, WORK = "/home/user", "/home/user/project"
LONG = 160  # longer texts are Claude Code's own prose


def _png() -> bytes:
    """A 1x1 PNG, made here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _prompts(work: Path) -> list[str]:
    def read(name: str) -> str:
        return f"[[call Read {json.dumps({'file_path': str(work / name)})}]]"

    return [
        "[[say pong-42]]",
        f"What does notes.txt say? {read('notes.txt')}",
        f"And missing.txt? {read('missing.txt')}",
        f"What is in the picture? {read('pixel.png')}",
        f"And in the PDF? {read('doc.pdf')}",
    ]


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if isinstance(value, str) and key in ("text", "description", "content") and len(value) > LONG:
        return f"[{len(value)} characters of Claude Code's own text]"
    return value


def _anonymise(text: str, home: Path, work: Path) -> str:
    text = text.replace(str(work), WORK).replace(str(home), HOME)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                  "00000000-0000-4000-8000-000000000000", text)  # fmt: skip
    return re.sub(r"\b[0-9a-f]{64}\b", "0" * 64, text)


def record() -> dict[str, Any]:
    requests: list[dict[str, Any]] = []
    version = subprocess.run([node_binary("claude"), "--version"], capture_output=True,
                             text=True, check=True).stdout.split()[0]  # fmt: skip
    for model in MODELS:
        with (
            tempfile.TemporaryDirectory() as tmp,
            ScriptedAnthropic() as fake,
            EgressTrap() as trap,
        ):
            home, work = Path(tmp) / "home", Path(tmp) / "work"
            home.mkdir()
            work.mkdir()
            (work / "notes.txt").write_text("the secret word is tollgate-7f3a\n")
            (work / "pixel.png").write_bytes(_png())
            (work / "doc.pdf").write_bytes(pdf())
            env = clean_env(
                home, **trap.env(), ANTHROPIC_BASE_URL=fake.base_url,
                ANTHROPIC_API_KEY=anthropic_upstream.API_KEY,
                CLAUDE_CONFIG_DIR=str(home / ".claude"), ANTHROPIC_MODEL=model,
                ANTHROPIC_DEFAULT_OPUS_MODEL=model, ANTHROPIC_DEFAULT_SONNET_MODEL=model,
                ANTHROPIC_DEFAULT_HAIKU_MODEL=model, ANTHROPIC_SMALL_FAST_MODEL=model,
                CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1",
                DISABLE_ERROR_REPORTING="1", DISABLE_AUTOUPDATER="1",
            )  # fmt: skip
            for turn, prompt in enumerate(_prompts(work)):
                command = [node_binary("claude"), "-p", prompt, "--model", model,
                           "--output-format", "json", "--allowedTools", "Read",
                           *(["--continue"] if turn else [])]  # fmt: skip
                done = run(command, env, cwd=work, timeout=180)
                if done.returncode != 0:
                    raise SystemExit(f"claude failed on {model}: {done.stdout}\n{done.stderr}")
            assert trap.asked == [], trap.asked
            for seen in fake.seen:
                headers = {k.lower(): v for k, v in seen.headers.items()
                           if k.lower().startswith("anthropic-")}  # fmt: skip
                entry = {"model": model, "path": seen.path, "query": seen.query,
                         "headers": headers, "body": _redact(seen.body)}  # fmt: skip
                requests.append(json.loads(_anonymise(json.dumps(entry), home, work)))
    return {
        "client": f"@anthropic-ai/claude-code {version}",
        "recorded_with": "python -m tests.e2e.clients.record_claude_code",
        "note": "Claude Code's own long texts are replaced by placeholders of their length.",
        "requests": requests,
    }


def main() -> int:
    recorded = record()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    # One request a line: diffs between recordings stay readable.
    head = {k: v for k, v in recorded.items() if k != "requests"}
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in recorded["requests"]]
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    FIXTURE.write_text(text + ',\n "requests": [\n' + ",\n".join(lines) + "\n ]\n}\n")
    sys.stderr.write(f"{len(recorded['requests'])} requests written to {FIXTURE}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Coding agents, unchanged, against a running Tollgate: Claude Code (`claude -p`, on
`/v1/messages`) and Codex CLI (`codex exec`, on `/v1/responses`), each on a GPT, a Claude and a
Gemini model, answering a prompt and doing a tool round trip with their own tools (Claude Code's
`Read`, Codex's `exec_command` running `cat`) on a file only the tool can see.

Both are pointed at Tollgate the documented way: Claude Code with ANTHROPIC_BASE_URL and
ANTHROPIC_API_KEY, Codex with a model provider in its config (base_url, env_key, wire_api
"responses"). Telemetry, error reports, update checks and other non-essential traffic are turned
off with their documented settings, and every HTTP(S) request that is not for loopback goes to a
trap that refuses it: each cell asserts that nothing tried to leave 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.clients.harness import (
    CLAUDE,
    GEMINI,
    GPT,
    EgressTrap,
    Fakes,
    Gateway,
    assert_metered,
    clean_env,
    node_binary,
    pdf,
    run,
)

SECRET = "tollgate-7f3a"  # what the file says: only a tool that read it can quote it


def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text(f"the secret word is {SECRET}\n")
    return home, work


def _claude_code(url: str, key: str, model: str, prompt: str, home: Path, work: Path,
                 trap: EgressTrap) -> dict[str, object]:  # fmt: skip
    env = clean_env(
        home, **trap.env(),
        ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY=key, CLAUDE_CONFIG_DIR=str(home / ".claude"),
        # Every model role Claude Code picks from (the small fast one included) is the cell's.
        ANTHROPIC_MODEL=model, ANTHROPIC_DEFAULT_OPUS_MODEL=model,
        ANTHROPIC_DEFAULT_SONNET_MODEL=model, ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
        ANTHROPIC_SMALL_FAST_MODEL=model,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1", DISABLE_AUTOUPDATER="1",
    )  # fmt: skip
    command = [node_binary("claude"), "-p", prompt, "--model", model, "--output-format", "json",
               "--allowedTools", "Read"]  # fmt: skip
    done = run(command, env, cwd=work)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout)
    assert result["is_error"] is False, result
    return result


def _codex(url: str, key: str, model: str, prompt: str, home: Path, work: Path,
           trap: EgressTrap) -> str:  # fmt: skip
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "tollgate"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "danger-full-access"\n'  # the cell's temporary directory is the sandbox
        "check_for_update_on_startup = false\n"
        "[analytics]\nenabled = false\n"
        "[features]\nplugins = false\n"  # no sync of the curated plugin catalog
        "[model_providers.tollgate]\n"
        'name = "Tollgate"\n'
        f'base_url = "{url}/v1"\n'
        'env_key = "TOLLGATE_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = clean_env(home, **trap.env(), CODEX_HOME=str(codex_home), TOLLGATE_API_KEY=key)
    last = home / "last-message.txt"
    command = [node_binary("codex"), "exec", "--skip-git-repo-check", "--ephemeral",
               "--color", "never", "-o", last, prompt]  # fmt: skip
    done = run(command, env, cwd=work)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return last.read_text().strip()


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool"])
@pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
def test_claude_code(
    gateway: Gateway, fakes: Fakes, key: str, model: str, tools: bool, tmp_path: Path
) -> None:
    home, work = _workspace(tmp_path)
    prompt = "[[say pong-42]]"
    if tools:
        read = json.dumps({"file_path": str(work / "notes.txt")})
        prompt = f"What does notes.txt say? [[call Read {read}]]"
    with EgressTrap() as trap:
        result = _claude_code(gateway.url, key, model, prompt, home, work, trap)
    if tools:
        assert str(result["result"]).startswith("Tool result: "), result
        assert SECRET in str(result["result"]), result
        assert result["num_turns"] == 2, result
    else:
        assert result["result"] == "pong-42", result
    assert trap.asked == []
    assert_metered(gateway, key, fakes, model, "/v1/messages")


@pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
def test_claude_code_reads_a_pdf(
    gateway: Gateway, fakes: Fakes, key: str, model: str, tmp_path: Path
) -> None:
    """Read answers with a PDF `document` in its tool result: a Claude model gets it as sent,
    the others a line saying it is not shown (and the turn goes on)."""
    home, work = _workspace(tmp_path)
    (work / "doc.pdf").write_bytes(pdf())
    read = json.dumps({"file_path": str(work / "doc.pdf")})
    with EgressTrap() as trap:
        result = _claude_code(gateway.url, key, model, f"The PDF? [[call Read {read}]]", home,
                              work, trap)  # fmt: skip
    said = str(result["result"])
    assert said.startswith("Tool result: "), result
    assert "PDF file read" in said, result
    assert ("not shown" in said) == (model != CLAUDE), said
    sent = fakes.anthropic.seen[-1].body if model == CLAUDE else None
    if sent is not None:  # the document itself reached Claude
        assert '"document"' in json.dumps(sent["messages"][-1])
    assert trap.asked == []
    assert_metered(gateway, key, fakes, model, "/v1/messages")


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool"])
@pytest.mark.parametrize("model", [GPT, CLAUDE, GEMINI])
def test_codex(
    gateway: Gateway, fakes: Fakes, key: str, model: str, tools: bool, tmp_path: Path
) -> None:
    home, work = _workspace(tmp_path)
    prompt = "[[say pong-42]]"
    if tools:
        prompt = 'What does notes.txt say? [[call exec_command {"cmd": "cat notes.txt"}]]'
    with EgressTrap() as trap:
        answer = _codex(gateway.url, key, model, prompt, home, work, trap)
    if tools:
        assert answer.startswith("Tool result: "), answer
        assert SECRET in answer, answer
    else:
        assert answer == "pong-42"
    assert trap.asked == []
    assert_metered(gateway, key, fakes, model, "/v1/responses")

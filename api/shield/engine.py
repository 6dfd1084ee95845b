"""Masking: a tenant's compiled shield, applied to one string or to a whole request body.

Every detector (preset or tenant rule) is run over the original text; where matches overlap,
the one that starts first wins (the longer one on a tie, then the earlier detector). A match
is replaced by:

- `full`: `[REDACTED:<name>]`;
- `keep_prefix` N: its first N characters, then one `*` per character masked;
- `keep_suffix` N: one `*` per character masked, then its last N characters.

At most half of a match is ever kept (N is capped at `len(match) // 2`), so a short match is
never shown whole. Every expression runs with a timeout (`regex`'s own), and a body is masked
within one time budget: running out of either is `ShieldTimeout`, which the caller turns into a
refusal (`fail: closed`) or an unmasked request with a warning (`fail: open`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import regex

from api.shield import presets

Mask = Literal["full", "keep_prefix", "keep_suffix"]

# Each expression, over one string, must finish within this (seconds), plus PER_CHAR for
# each character of the string: linear expressions take well under a microsecond per
# character, a catastrophic one blows past any such allowance on a few dozen.
MATCH_TIMEOUT = 0.1
PER_CHAR = 1e-6
# One request body, every string of it, every detector: this, plus PER_CHAR per character
# of every string times the number of detectors.
BODY_BUDGET = 1.0
MAX_PATTERN_LENGTH = 1000
MAX_KEEP = 64
# Strings that are not text: base64 media, signatures the provider checks byte for byte.
_OPAQUE_KEYS = frozenset(
    {"signature", "thoughtSignature", "thought_signature", "encrypted_content", "b64_json",
     "file_data"}
)  # fmt: skip
# Bodies with more text than this are masked in a worker thread (`regex` lets go of the GIL
# while it matches), so a large prompt does not stall every other request on the event loop.
OFFLOAD_CHARS = 64_000
_MEDIA_TYPE_KEYS = ("mimeType", "mime_type", "media_type", "format")


class ShieldTimeout(Exception):
    """Masking did not complete in its time budget (or a stored rule no longer compiles)."""

    def __init__(self, detector: str) -> None:
        self.detector = detector
        super().__init__(detector)


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    pattern: regex.Pattern[str]
    check: Callable[[str], bool] | None = None
    mask: Mask = "full"
    keep: int = 0
    group: int | str = 0  # what is masked: the whole match, or its `secret` group
    hints: tuple[str, ...] = ()  # skip text that contains none of these


@dataclass(frozen=True, slots=True)
class Match:
    name: str
    start: int
    end: int


def replacement(detector: Detector, text: str) -> str:
    if detector.mask == "full":
        return f"[REDACTED:{detector.name}]"
    keep = min(detector.keep, len(text) // 2)
    hidden = "*" * (len(text) - keep)
    if detector.mask == "keep_prefix":
        return text[:keep] + hidden
    return hidden + text[len(text) - keep :]


@dataclass(slots=True)
class Shield:
    """A tenant's detectors, compiled; built when its routing is loaded."""

    detectors: tuple[Detector, ...]
    fail_open: bool = False
    broken: str | None = None  # a stored rule that does not compile: masking cannot complete
    budget: float = BODY_BUDGET
    match_timeout: float = MATCH_TIMEOUT

    def matches(
        self, text: str, deadline: float, concurrent: bool = False
    ) -> list[tuple[Match, Detector]]:
        if self.broken is not None:
            raise ShieldTimeout(self.broken)
        found: list[tuple[int, int, int, Detector]] = []
        allowed = self.match_timeout + len(text) * PER_CHAR
        for rank, detector in enumerate(self.detectors):
            if detector.hints and not any(hint in text for hint in detector.hints):
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise ShieldTimeout(detector.name)
            try:
                for hit in detector.pattern.finditer(
                    text, concurrent=concurrent, timeout=min(allowed, remaining)
                ):
                    start, end = hit.span(detector.group)
                    if end <= start:
                        continue
                    if detector.check is not None and not detector.check(text[start:end]):
                        continue
                    found.append((start, -(end - start), rank, detector))
            except TimeoutError:
                raise ShieldTimeout(detector.name) from None
        if not found:
            return []
        found.sort(key=lambda item: item[:3])
        chosen: list[tuple[Match, Detector]] = []
        covered = 0
        for start, negative_length, _, detector in found:
            if start < covered:
                continue
            end = start - negative_length
            chosen.append((Match(detector.name, start, end), detector))
            covered = end
        return chosen

    def allowance(self, text: str) -> float:
        return len(text) * PER_CHAR * len(self.detectors)

    def mask_text(
        self, text: str, deadline: float | None = None, concurrent: bool = False
    ) -> tuple[str, list[Match]]:
        if deadline is None:
            deadline = time.perf_counter() + self.budget + self.allowance(text)
        chosen = self.matches(text, deadline, concurrent)
        if not chosen:
            return text, []
        out: list[str] = []
        at = 0
        for match, detector in chosen:
            out.append(text[at : match.start])
            out.append(replacement(detector, text[match.start : match.end]))
            at = match.end
        out.append(text[at:])
        return "".join(out), [match for match, _ in chosen]

    def mask_body(self, body: Any, concurrent: bool = False) -> tuple[Any, int]:
        """`body` with every string masked (a copy where anything changed; the original is
        never modified) and how many matches were masked."""
        walker = _Walker(self, time.perf_counter() + self.budget, concurrent)
        return walker.value(body), walker.count

    async def mask_body_async(self, body: Any) -> tuple[Any, int]:
        """`mask_body`, in a worker thread when the body holds much text."""
        if text_size(body, OFFLOAD_CHARS) < OFFLOAD_CHARS:
            return self.mask_body(body)
        return await asyncio.to_thread(self.mask_body, body, True)


@dataclass(slots=True)
class _Walker:
    shield: Shield
    deadline: float
    concurrent: bool = False
    count: int = 0

    def value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return self.mapping(value, depth)
        if isinstance(value, list):
            changed = False
            out = []
            for item in value:
                new = self.value(item, depth + 1)
                changed = changed or new is not item
                out.append(new)
            return out if changed else value
        return value

    def mapping(self, value: dict[Any, Any], depth: int) -> dict[Any, Any]:
        media = any(key in value for key in _MEDIA_TYPE_KEYS)
        changed: dict[Any, Any] = {}
        for key, item in value.items():
            if key in _OPAQUE_KEYS or (media and key == "data"):
                continue
            if key == "model" and depth <= 1:  # the body's model (or a countTokens request's)
                continue
            new = self.value(item, depth + 1)
            if new is not item:
                changed[key] = new
        return {**value, **changed} if changed else value

    def text(self, text: str) -> str:
        if len(text) < 6 or (text.startswith("data:") and ";base64," in text[:200]):
            return text
        self.deadline += self.shield.allowance(text)
        masked, found = self.shield.mask_text(text, self.deadline, self.concurrent)
        self.count += len(found)
        return masked


def text_size(value: Any, limit: int) -> int:
    """How many characters of text `value` holds, counted up to `limit` at least."""
    total = 0
    stack = [value]
    while stack and total < limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def _group(pattern: regex.Pattern[str]) -> int | str:
    return presets.SECRET_GROUP if presets.SECRET_GROUP in pattern.groupindex else 0


def compile_detectors(
    preset_names: Iterable[str], rules: Iterable[dict[str, Any]]
) -> tuple[Detector, ...]:
    """Tenant rules first (a tenant's own name for a span wins a tie), then the presets."""
    out = []
    for rule in rules:
        pattern = regex.compile(str(rule["pattern"]))
        out.append(
            Detector(
                str(rule["name"]),
                pattern,
                mask=rule.get("mask", "full"),
                keep=int(rule.get("keep", 0)),
                group=_group(pattern),
            )
        )
    wanted = set(preset_names)
    for name in presets.PRESET_NAMES:  # in their own order, whatever order they were named in
        if name in wanted:
            preset = presets.BY_NAME[name]
            pattern = presets.compiled(name)
            out.append(
                Detector(name, pattern, preset.check, group=_group(pattern), hints=preset.hints)
            )
    return tuple(out)


# Inputs that make backtracking expressions blow up: long runs of one character class, then
# a character that makes the match fail at the end.
_PROBE_UNITS = ("a", "A", "0", " ", "x.", "a0", "-", "_", "a@", "ab", "1 ", "/", "\t", "é")
_PROBE_TAILS = ("!", "\x00", "", "a")
PROBE_LENGTH = 10_000
PROBE_TIMEOUT = 0.05


def probes() -> list[str]:
    out: list[str] = []
    for unit in _PROBE_UNITS:
        run = unit * (PROBE_LENGTH // len(unit))
        out.extend(run + tail for tail in _PROBE_TAILS)
    out.append("The quick brown fox, sk-test 4111 1111 1111 1111 a@b.co +1 415 555 2671. " * 40)
    return out


def check_pattern(pattern: str) -> str | None:
    """Why a tenant's pattern is refused (compile error, too long, matches the empty string,
    too slow on adversarial input), or None."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"a pattern is at most {MAX_PATTERN_LENGTH} characters"
    try:
        compiled = regex.compile(pattern)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:
        return f"not a valid regular expression ({exc})"
    try:
        if compiled.fullmatch("", timeout=PROBE_TIMEOUT) is not None:
            return "the pattern matches the empty string"
        for probe in probes():
            started = time.perf_counter()
            for _ in compiled.finditer(probe, timeout=PROBE_TIMEOUT):
                if time.perf_counter() - started > PROBE_TIMEOUT:
                    raise TimeoutError
    except TimeoutError:
        return (
            "the pattern takes too long on adversarial input (catastrophic backtracking): "
            "avoid nested quantifiers such as (a+)+ and anchor open-ended repeats, e.g. "
            "\\b[a-z]+\\d rather than [a-z]+\\d"
        )
    return None

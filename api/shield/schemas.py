from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.shield import engine, presets

PresetName = Literal[
    "anthropic_key",
    "openai_key",
    "google_api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "jwt",
    "credit_card",
    "email",
    "phone",
]
assert set(PresetName.__args__) == set(presets.PRESET_NAMES)  # type: ignore[attr-defined]

RuleName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
]


class ShieldRule(BaseModel):
    """A tenant's own detector: what `pattern` matches is masked as `mask` says."""

    model_config = ConfigDict(extra="forbid")

    name: RuleName
    pattern: Annotated[str, StringConstraints(min_length=1)]
    mask: Literal["full", "keep_prefix", "keep_suffix"] = "full"
    keep: int = Field(default=0, ge=0, le=engine.MAX_KEEP)

    @field_validator("pattern")
    @classmethod
    def _safe(cls, value: str) -> str:
        problem = engine.check_pattern(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _all_presets() -> list[PresetName]:
    return list(PresetName.__args__)  # type: ignore[attr-defined]


class ShieldSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Mask secrets and personal data in every request body before a provider sees it.
    enabled: bool = False
    presets: list[PresetName] = Field(default_factory=_all_presets, max_length=20)
    rules: list[ShieldRule] = Field(default_factory=list, max_length=50)
    # When masking cannot complete in time: refuse the request ("closed") or send it
    # unmasked with an X-Tollgate-Shield warning ("open").
    fail: Literal["closed", "open"] = "closed"

    @classmethod
    def stored(cls, value: object) -> ShieldSettings:
        """The group as saved in `tenant.settings`, over the defaults: not validated again (its
        patterns were checked on save and are not probed on every read)."""
        saved = value if isinstance(value, dict) else {}
        defaults = cls()
        rules = [
            ShieldRule.model_construct(**{"mask": "full", "keep": 0, **rule})
            for rule in saved.get("rules") or []
            if isinstance(rule, dict)
        ]
        return cls.model_construct(
            enabled=bool(saved.get("enabled", defaults.enabled)),
            presets=list(saved.get("presets", defaults.presets)),
            rules=rules,
            fail=saved.get("fail", defaults.fail),
        )


class ShieldTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(max_length=1_000_000)]
    rules: list[ShieldRule] | None = Field(default=None, max_length=50)
    presets: list[PresetName] | None = Field(default=None, max_length=20)


class ShieldMatch(BaseModel):
    name: str
    start: int
    end: int


class ShieldTestOut(BaseModel):
    object: Literal["shield_test"] = "shield_test"
    masked: str
    matches: list[ShieldMatch]

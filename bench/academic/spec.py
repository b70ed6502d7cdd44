"""The scenario's optional ``academic:`` section (validated at the boundary, unknown keys rejected)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The task name alphabet lm-eval uses for its YAML tasks (also safe in file names and argv).
_TASK_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LmEvalSpec(_Strict):
    """lm-evaluation-harness tasks run against every target's endpoint (``pip install -e '.[academic]'``)."""

    tasks: list[str] = Field(min_length=1, description="task names defined by YAML files under include_path")
    include_path: str = Field("../quality/lmeval",
                              description="folder of task YAMLs (relative to the scenario)")
    limit: Optional[int] = Field(None, ge=1, description="first N documents of each task")
    num_concurrent: int = Field(1, ge=1, le=64, description="requests lm-eval keeps in flight")
    timeout_s: float = Field(1800.0, gt=0, le=86_400, description="per target, the whole lm-eval run")

    @field_validator("tasks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or not set(name) <= _TASK_CHARS:
                raise ValueError(f"task name {name!r}: letters, digits, '_', '.', '-' only")
        return v


class AcademicSpec(_Strict):
    """What ``benchbox academic`` measures. All of it is informational, never a gate."""

    text: Optional[str] = Field(
        None, description="held-out text (relative to the scenario); default: quality/heldout/plain_en.txt")
    ctx: int = Field(128, ge=16, le=32_768, description="llama-perplexity context (tokens per chunk)")
    chunks: Optional[int] = Field(None, ge=1, description="use the first N chunks only (default: all)")
    llamacpp: bool = Field(True, description="perplexity and KL divergence of managed llama.cpp targets")
    endpoint_perplexity: Literal["auto", "require", "off"] = Field(
        "auto", description="auto: probe each endpoint and report 'unsupported' where prompt logprobs are "
                            "missing; require: such a target is an error (exit 2); off: skip")
    lmeval: Optional[LmEvalSpec] = None

    @field_validator("endpoint_perplexity", mode="before")
    @classmethod
    def _yaml_bool(cls, v: object) -> object:
        # YAML 1.1 reads a bare `off` / `on` as a boolean.
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v

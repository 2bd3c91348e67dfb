"""The analyzer contract in analyzers/base.py: declared parameters and the batch/one-track pair."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from pydantic import Field

from mirflow.analyzers.base import Analyzer, AnalyzerParams, describe_param
from mirflow.core.audio import TrackContext
from mirflow.core.errors import AnalysisError, ConfigError


class BatchOnly(Analyzer):
    name: ClassVar[str] = "batch_only"

    def analyze_batch(self, ctxs: list[TrackContext]) -> list[dict[str, Any] | BaseException]:
        return [AnalysisError("silent") if not np.any(c.audio.samples) else {"n": c.audio.samples.shape[1]}
                for c in ctxs]


class Neither(Analyzer):
    name: ClassVar[str] = "neither"


def ctx(values: np.ndarray) -> TrackContext:
    return TrackContext.from_array(values.astype(np.float32)[None], 8000)


def test_analyze_comes_from_analyze_batch() -> None:
    a = BatchOnly()
    assert a.analyze(ctx(np.ones(100))) == {"n": 100}
    with pytest.raises(AnalysisError, match="silent"):  # the batch's per-track exception is raised
        a.analyze(ctx(np.zeros(100)))
    with pytest.raises(NotImplementedError, match="analyze\\(\\) or analyze_batch\\(\\)"):
        Neither().analyze(ctx(np.ones(10)))


def test_threads_default_to_the_librarys_choice() -> None:
    assert BatchOnly().threads == 0


class P(AnalyzerParams):
    ratio: float = Field(0.5, gt=0, lt=1)
    count: int = Field(1, ge=1)
    mode: Literal["a", "b"] = "a"
    folder: str | None = None
    names: list[str] = Field(default_factory=list)
    flag: bool = False


def test_what_a_parameter_accepts_in_words() -> None:
    f = P.model_fields
    assert describe_param(f["ratio"]) == "a number, > 0 and < 1"
    assert describe_param(f["count"]) == "an integer, >= 1"
    assert describe_param(f["mode"]) == "one of 'a', 'b'"
    assert describe_param(f["folder"]) == "text (or unset)"
    assert describe_param(f["names"]) == "a list of text"
    assert describe_param(f["flag"]) == "true or false"


class WithParams(Analyzer):
    name: ClassVar[str] = "with_params"
    Params = P


@pytest.mark.parametrize("value, needle", [
    ("abc", "with_params.ratio = 'abc': Input should be a valid number (allowed: a number, > 0 and < 1)"),
    (True, "with_params.ratio = true:"),
    (1.5, "with_params.ratio = 1.5: Input should be less than 1"),
])
def test_bad_values_name_key_value_and_what_is_allowed(value: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        WithParams(ratio=value)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert WithParams(ratio=0.25, count=3).params == {**P().model_dump(), "ratio": 0.25, "count": 3}

"""A reward written as a Python function: ``pkg.module:fn`` or ``path/to/file.py:fn``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rewardtune.rewards.base import join
from rewardtune.rewards.http import call_within
from rewardtune.rewards.registry import Input, RewardBase, reward_type
from rewardtune.types import RewardtuneError


@reward_type
class PythonSpec(RewardBase):
    type: Literal["python"]
    input: Input = "prompt+response"
    function: str  # "pkg.module:fn" or "path/to/file.py:fn"
    # fn(responses), fn(prompts, responses), fn(texts) (texts: what `input` names) or
    # fn(prompts, responses, **columns); null: from the signature (two required positional
    # parameters: prompts_responses, or columns when keyword parameters follow; one: texts)
    call: Literal["responses", "prompts_responses", "texts", "columns"] | None = None
    # a call that takes longer fails (and is retried, see `retries`); null: no limit. The
    # abandoned call runs on in a daemon thread, which ends with the process
    timeout_s: float | None = Field(None, gt=0)

    summary: ClassVar = ("function",)

    def needs_columns(self) -> set[str]:
        """The input template's columns, and the keyword-only parameters without a default
        of a function called with the columns."""
        needed = super().needs_columns()
        fn = import_function(self.function, "reward")
        if (self.call or default_call(fn, "reward")) == "columns":
            needed |= {
                p.name
                for p in inspect.signature(fn).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.default is p.empty
            }
        return needed

    @model_validator(mode="after")
    def _check(self) -> PythonSpec:
        if ":" not in self.function:
            raise ValueError("function must look like 'pkg.module:fn' or 'path/file.py:fn'")
        return self

    def scorer(self, where: str) -> PythonReward:
        return PythonReward(self.function, self.input, where, self.call, self.timeout_s)


def import_function(target: str, where: str):
    """Import exactly the named module or file and return its attribute ``fn``."""
    module_name, _, attr = target.rpartition(":")
    if module_name.endswith(".py"):
        module = _import_file(Path(module_name).expanduser(), where)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise RewardtuneError(
                f"{where}: module {module_name!r} cannot be imported ({err}); check the name "
                "or give a file path like path/to/reward.py:fn"
            ) from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RewardtuneError(f"{where}: {module_name} has no function {attr!r}")
    return fn


def _import_file(path: Path, where: str):
    """A reward file as a module registered in ``sys.modules`` (dataclasses and pickle look
    their module up there)."""
    if not path.is_file():
        raise RewardtuneError(f"{where}: file {path} does not exist")
    name = f"rewardtune_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:
        del sys.modules[name]
        raise RewardtuneError(
            f"{where}: importing {path} failed: {type(err).__name__}: {err}"
        ) from err
    return module


def default_call(fn, where: str) -> str:
    """How to call ``fn`` when ``call`` is not set: by its required positional parameters
    (those without a default): two -> fn(prompts, responses), or fn(prompts, responses,
    **columns) when ``**kwargs`` or keyword-only parameters follow; one -> fn(texts)."""
    params = inspect.signature(fn).parameters.values()
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(required) == 2 and any(p.kind in (p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        return "columns"
    if len(required) == 2:
        return "prompts_responses"
    if len(required) == 1:
        return "texts"
    raise RewardtuneError(
        f"{where}: cannot tell how to call {getattr(fn, '__name__', fn)} ({len(required)} "
        "required positional parameters); set call: responses | prompts_responses | texts | "
        "columns"
    )


class PythonReward:
    """Calls ``fn(prompts, responses)``, ``fn(responses)``, ``fn(texts)`` or
    ``fn(prompts, responses, **columns)`` (``call``), where texts are what ``input`` names
    and each column is a list with one value per response; each returns one float per
    response, within ``timeout_s`` seconds when it is set."""

    def __init__(
        self,
        function: str,
        input: str = "prompt+response",
        where: str = "reward",
        call: str | None = None,
        timeout_s: float | None = None,
    ):
        self.fn = import_function(function, where)
        self.name = function.rpartition(":")[2]
        self.input = input
        self.call = call or default_call(self.fn, where)
        self.timeout_s = timeout_s
        self.keywords = _keyword_names(self.fn)  # None: it takes **kwargs, every column

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        if self.timeout_s is None:
            return self._call(prompts, responses, columns or {})
        return call_within(self.timeout_s, lambda: self._call(prompts, responses, columns or {}))

    def _call(self, prompts: list[str], responses: list[str], columns: dict) -> list[float]:
        if self.call == "columns":
            given = {
                k: v for k, v in columns.items() if self.keywords is None or k in self.keywords
            }
            return self.fn(prompts, responses, **given)
        if self.call == "prompts_responses":
            return self.fn(prompts, responses)
        if self.call == "responses":
            return self.fn(list(responses))
        return self.fn(join(prompts, responses, self.input, columns))


def _keyword_names(fn) -> set[str] | None:
    """The parameters ``fn`` takes by keyword, or None when it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

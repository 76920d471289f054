"""A reward written as a Python function: ``pkg.module:fn`` or ``path/to/file.py:fn``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

from rewardtune.types import RewardtuneError


def import_function(target: str, where: str):
    """Import exactly the named module or file and return its attribute ``fn``."""
    module_name, _, attr = target.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise RewardtuneError(f"{where}: file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"rewardtune_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            raise RewardtuneError(
                f"{where}: importing {path} failed: {type(err).__name__}: {err}"
            ) from err
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


class PythonReward:
    """Calls ``fn(prompts, responses) -> list[float]`` (or ``fn(responses)``)."""

    def __init__(self, function: str, input: str = "prompt+response", where: str = "reward"):
        self.fn = import_function(function, where)
        self.name = function.rpartition(":")[2]
        self.input = input
        self.takes_prompts = len(inspect.signature(self.fn).parameters) >= 2

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        if self.takes_prompts:
            return self.fn(prompts, responses)
        if self.input == "prompt+response":
            return self.fn([p + r for p, r in zip(prompts, responses, strict=True)])
        return self.fn(responses)

"""The recipe: typed, validated configuration: YAML recipes, `--set a.b=c` overrides, one error line.

Validated once here, at the edge; everything below receives these objects and trusts them.
"""

from __future__ import annotations

import json
import operator
import re
from functools import reduce
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, PositiveFloat, ValidationError, model_validator

from rewardtune.config.base import PUBLIC, Section
from rewardtune.core.advantages import AdvantageName, KLIn
from rewardtune.core.ppo import KLEstimator
from rewardtune.core.surrogate import (
    SEQUENCE_RATIO_AGGREGATION,
    ImportanceRatio,
    LossAggregation,
)
from rewardtune.rewards.registry import is_type_name, reward_types, toxicity_types
from rewardtune.text import checked_encoding, checked_run_dir, checked_template
from rewardtune.types import RewardtuneError

DEFAULT_RECIPE = "smollm2-detox"


Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy seeds are unsigned 32-bit


# --- model ---------------------------------------------------------------------------


class LoraConfig(Section):
    r: int = Field(16, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["auto"] = "auto"


class ModelConfig(Section):
    name: str = "smollm2-135m-instruct"
    kind: Literal["auto", "causal", "seq2seq"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    adapter: str | None = None  # an existing LoRA adapter folder, loaded trainable
    trust_remote_code: bool = False
    lora: LoraConfig | None = Field(default_factory=LoraConfig)  # null = full fine-tuning
    quantization: Literal["none", "4bit", "8bit"] = "none"
    cpu_linear: Literal["onednn", "torch"] = "onednn"  # CPU dense layers (models/cpu_linear.py)
    gradient_checkpointing: bool = False  # the update recomputes each layer in the backward
    logprob_chunk: int | None = Field(None, gt=0)  # response positions per LM-head pass

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.quantization != "none" and self.lora is None and self.adapter is None:
            raise ValueError("quantization needs LoRA (set model.lora) or model.adapter")
        return self


# --- rewards: one module per type in rewards/, found there -----------------------------


def _by_type(types: tuple[type[Section], ...]) -> Any:
    """One of ``types``, chosen by the section's ``type:`` key."""
    return Annotated[reduce(operator.or_, types), Field(discriminator="type")]


RewardSpec = _by_type(reward_types())
ToxicitySpec = _by_type(toxicity_types())


# --- data, generation, ppo, eval, run ------------------------------------------------


class DataConfig(Section):
    source: str = "detox"  # shipped prompt set, local file, or hub data set
    split: str = "train"
    column: str = "text"
    template: Annotated[str, AfterValidator(checked_template)] = "{text}"
    chat: bool | Literal["both"] = False  # both: every training prompt plain and as a chat turn
    chat_template: str | None = None  # Jinja template for a tokenizer that ships none
    min_chars: int = Field(0, ge=0)
    max_chars: int | None = Field(None, gt=0)
    query_tokens: tuple[int, int] | None = None  # sample a query length in [min, max]
    limit: int | None = Field(None, gt=0)  # keep at most this many prompts (after filters)
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    seed: Seed = 0
    encoding: Annotated[str, AfterValidator(checked_encoding)] = "utf-8"  # a BOM is skipped
    truncate: Literal["left", "error"] = "left"  # prompts longer than the model's context
    columns: list[str] | None = None  # the row fields that travel with a prompt; null: all

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError("max_chars must be >= min_chars")
        if self.query_tokens is not None and not 0 < self.query_tokens[0] <= self.query_tokens[1]:
            raise ValueError("query_tokens must be [min, max] with 0 < min <= max")
        return self


class GenerationConfig(Section):
    max_new_tokens: int = Field(32, gt=0)
    min_new_tokens: int = Field(0, ge=0)
    response_tokens: tuple[int, int] | None = None  # sample a length in [min, max] per sample
    do_sample: bool = True
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    temperature: float = Field(1.0, gt=0)
    engine: Literal["hf", "fast"] = "fast"  # fast: our static-cache decode loop, same draws
    compile: bool = False  # fast engine: torch.compile its one-token step (on CUDA, then graphed)

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if self.response_tokens is not None:
            low, high = self.response_tokens
            if not 0 < low <= high:
                raise ValueError("response_tokens must be [min, max] with 0 < min <= max")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must be <= max_new_tokens")
        if self.compile and self.engine != "fast":
            raise ValueError("generation.compile needs engine: fast")
        return self

    @property
    def longest(self) -> int:
        """The most tokens any response can have."""
        return self.response_tokens[1] if self.response_tokens else self.max_new_tokens


class PPOConfig(Section):
    learning_rate: float = Field(1.41e-5, gt=0)
    batch_size: int = Field(16, gt=0)
    mini_batch_size: int = Field(4, gt=0)
    ppo_epochs: int = Field(4, gt=0)
    init_kl_coef: float = Field(0.2, ge=0)
    adaptive_kl: bool = True
    target_kl: float = Field(6.0, gt=0)
    horizon: int = Field(10000, gt=0)
    kl_estimator: KLEstimator = "kl"
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    cliprange: float = Field(0.2, gt=0)
    cliprange_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    whiten_rewards: bool = False
    reward_scale: float = 1.0
    reward_clip: float | None = Field(None, gt=0)
    skip_nonfinite_rewards: bool = False
    max_kl: float | None = Field(None, gt=0)  # stop when objective/kl exceeds this
    early_stopping: bool = False  # classic TRL: stop the epochs when approxkl > 1.5 target_kl_early
    target_kl_early: float = Field(1.0, gt=0)
    ratio_threshold: float | None = Field(
        None, gt=0
    )  # skip a minibatch whose mean ratio exceeds it
    steps: int = Field(100, ge=0)
    seed: Seed = 0
    samples_per_prompt: int = Field(1, gt=0)  # k responses per prompt; batch_size counts them
    advantage: AdvantageName = "gae"
    grpo_scale: bool = True  # false = Dr. GRPO: no division by the group's std
    kl_in: KLIn = "reward"  # loss: k3 KL in the loss, as GRPO
    cliprange_low: float | None = Field(None, gt=0, lt=1)  # these: docs/config.md, Loss options
    cliprange_high: float | None = Field(None, gt=0)  # DAPO's clip-higher: 0.28 with low 0.2
    importance_ratio: ImportanceRatio = "token"
    sequence_cliprange: tuple[Annotated[float, Field(gt=0, lt=1)], PositiveFloat] = (3e-4, 4e-4)
    loss_aggregation: LossAggregation | None = None  # None: the estimator's published one
    mask_truncated: bool = False  # responses cut by the length limit get no policy loss
    filter_groups: bool = False  # DAPO's dynamic sampling: drop tied groups, draw more
    max_resample_rounds: int = Field(3, ge=0)  # extra draws per step under filter_groups
    compile: bool = False  # torch.compile the update's forward + backward (pays off on a GPU)

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must divide batch_size "
                f"({self.batch_size})"
            )
        if self.batch_size % self.samples_per_prompt:
            raise ValueError(
                f"batch_size ({self.batch_size}) counts responses and must divide by "
                f"samples_per_prompt ({self.samples_per_prompt})"
            )
        if self.advantage in ("rloo", "grpo") and self.samples_per_prompt < 2:
            raise ValueError(
                f"advantage {self.advantage} compares the responses to one prompt: set "
                "samples_per_prompt to 2 or more"
            )
        if not self.grpo_scale and self.advantage != "grpo":
            raise ValueError("grpo_scale applies only to advantage: grpo")
        if self.importance_ratio != "token" and self.loss_aggregation not in (
            None,
            SEQUENCE_RATIO_AGGREGATION,
        ):
            raise ValueError(
                f"importance_ratio {self.importance_ratio} averages one ratio per response: "
                f"set loss_aggregation to {SEQUENCE_RATIO_AGGREGATION} or leave it unset"
            )
        if self.filter_groups and self.samples_per_prompt < 2:
            raise ValueError("filter_groups drops groups that tie: set samples_per_prompt >= 2")
        return self


class EvalConfig(Section):
    enabled: bool = True
    prompts: int = Field(100, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    seed: Seed = 0
    batch_size: int = Field(16, gt=0)
    samples_per_prompt: int = Field(1, gt=0)  # responses per prompt and side; CIs resample prompts
    toxicity: ToxicitySpec | None = None
    extra_scorers: list[RewardSpec] = Field(default_factory=list)
    bootstrap: int = Field(1000, ge=100)
    forms: list[Literal["plain", "chat"]] | None = Field(None, min_length=1)  # None: data.chat's
    prompt_sets: list[str] = Field(default_factory=list)  # shipped set names or text files
    every: int = Field(0, ge=0)  # a quick held-out evaluation every N steps; 0: none
    every_prompts: int = Field(16, gt=0)  # how many held-out prompts it samples

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        for key, values in (("forms", self.forms or []), ("prompt_sets", self.prompt_sets)):
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:
                raise ValueError(f"{key} lists {twice!r} twice; list each once")
        return self


class RunConfig(Section):
    dir: Annotated[str, AfterValidator(checked_run_dir)] = "runs/{recipe}-{time}"
    save_every: int = Field(20, ge=0)  # 0 = only the final checkpoint
    save_every_minutes: float = Field(10.0, ge=0)  # also save by time; 0 = by steps only
    keep_checkpoints: int = Field(2, gt=0)
    log_samples: int = Field(4, ge=0)
    trackers: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["jsonl"]
    )
    keep_best: str | None = None  # a metric of eval.every's evaluation: its best model in best/


class Config(Section):
    recipe: str = "custom"  # set from the recipe's file name
    model: ModelConfig = Field(default_factory=ModelConfig)
    reward: list[RewardSpec] = Field(default_factory=list, min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.eval.enabled and self.data.eval_fraction == 0:
            raise ValueError(
                "eval.enabled needs held-out prompts: set data.eval_fraction > 0 "
                "(e.g. 0.1) or eval.enabled=false"
            )
        if self.run.keep_best and not (self.eval.every and self.eval.enabled):
            raise ValueError(
                f"run.keep_best ({self.run.keep_best}) picks by the evaluation during training: "
                "set eval.every (e.g. 10) with eval.enabled"
            )
        return self

    def public_dump(self) -> dict[str, Any]:
        """The config as plain data with secrets redacted: what config.yaml, reports, logs
        and trackers get."""
        return self.model_dump(mode="json", context=PUBLIC)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.public_dump(), sort_keys=False)


# --- loading -------------------------------------------------------------------------


def shipped_recipes() -> dict[str, Path]:
    """Name -> path of every recipe shipped in the package."""
    folder = resources.files("rewardtune") / "recipes"
    return {
        p.name.removesuffix(".yaml"): Path(str(p))
        for p in folder.iterdir()
        if p.name.endswith(".yaml")
    }


def recipe_path(recipe: str | None) -> Path:
    """A shipped recipe's name, or a path to a YAML file; None = the offline default."""
    recipe = recipe or DEFAULT_RECIPE
    shipped = shipped_recipes()
    if recipe in shipped:
        return shipped[recipe]
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RewardtuneError(f"recipe file {path} does not exist")
        return path
    raise RewardtuneError(
        f"unknown recipe {recipe!r}; shipped recipes: {', '.join(sorted(shipped))} "
        "(or give a path to a .yaml file)"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise RewardtuneError(f"recipe {path} is not valid YAML{where}: fix the syntax") from err
    if not isinstance(data, dict):
        raise RewardtuneError(
            f"recipe {path} must be a YAML mapping of sections (model:, ppo:, ...)"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'ppo.learning_rate=3e-5' -> (['ppo', 'learning_rate'], 3e-05), values typed by YAML."""
    if "=" not in text:
        raise RewardtuneError(f"--set {text!r}: expected KEY=VALUE, e.g. --set ppo.steps=10")
    key, raw = text.split("=", 1)
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[\w]+)*", key):
        raise RewardtuneError(f"--set {text!r}: {key!r} is not a dotted key like ppo.steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[a][b]... = value``, where list items are addressed by index (reward.0.weight)."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        key_so_far = ".".join(path[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RewardtuneError(
                    f"--set {'.'.join(path)}: {key_so_far} has no item {part} "
                    f"(the list has {len(node)} items)"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
                if not isinstance(node, dict | list):
                    raise RewardtuneError(f"--set {'.'.join(path)}: {key_so_far} is not a section")


def format_validation_error(err: ValidationError, source: str) -> str:
    """The first problem of a pydantic error as one line that names the key path."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not is_type_name(p))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against `rewardtune config`)"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc or 'config'}: {msg}{more}"


def validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise RewardtuneError(format_validation_error(err, source)) from err


def load_config(recipe: str | None = None, overrides: list[str] | None = None) -> Config:
    """Read a recipe (shipped name or path), apply ``--set`` overrides, validate."""
    path = recipe_path(recipe)
    data = _read_yaml(path)
    data.setdefault("recipe", path.stem)
    for text in overrides or []:
        key, value = parse_override(text)
        apply_override(data, key, value)
    return validate(data, f"recipe {path.name}")


# --- resuming ------------------------------------------------------------------------

# keys a resume may change: how long to train, how to evaluate, when to save, where to log,
# and how to reach a reward (config.yaml keeps a reward's url and headers redacted, so a
# resume may have to give them again); anything else would make it another experiment
RESUME_KEYS = (
    "ppo.steps",
    "eval.*",
    "run.save_every",
    "run.save_every_minutes",
    "run.keep_checkpoints",
    "run.log_samples",
    "run.trackers",
    "reward.N.url",
    "reward.N.headers",
    "reward.N.timeout_s",
    "reward.N.retries",
    "reward.N.retry_backoff_s",
)
_RESUME_KEY = re.compile(  # a key of RESUME_KEYS, or a key inside one (reward.0.headers.X)
    "(?:"
    + "|".join(re.escape(k).replace(r"\*", ".+").replace("N", r"\d+") for k in RESUME_KEYS)
    + r")(\..+)?"
)

Change = tuple[str, Any, Any]  # a dotted key, its value before, its value after


def load_resume_config(path: str, overrides: list[str] | None) -> tuple[Config, list[Change]]:
    """A run's stored config with the ``--set`` overrides of its resume, and what they change
    (values as config.yaml shows them, secrets redacted). A change of any key outside
    ``RESUME_KEYS`` is refused in one line that names the key."""
    stored = load_config(path)
    resumed = load_config(path, overrides)
    keys = _changed(stored.model_dump(mode="json"), resumed.model_dump(mode="json"))
    for key in keys:
        if not _RESUME_KEY.fullmatch(key):
            raise RewardtuneError(
                f"--set {key} at --resume would make this run another experiment than the one "
                f"its {Path(path).name} describes; a resume may change only "
                f"{', '.join(RESUME_KEYS)}: start a new run to change {key}"
            )
    before, after = stored.public_dump(), resumed.public_dump()
    return resumed, [(key, _at(before, key), _at(after, key)) for key in keys]


def _changed(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted keys (list items by index) whose values differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            key
            for name in dict.fromkeys([*before, *after])
            for key in _changed(before.get(name), after.get(name), f"{prefix}{name}.")
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            key
            for i, (a, b) in enumerate(zip(before, after, strict=True))
            for key in _changed(a, b, f"{prefix}{i}.")
        ]
    return [] if before == after else [prefix.rstrip(".")]


def _at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data.get(part)
    return data


# --- for editors and new recipes -----------------------------------------------------

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> str:
    """The recipe format as JSON Schema (pydantic's), for editors' YAML completion."""
    schema = {"$schema": SCHEMA_DIALECT} | Config.model_json_schema()
    return json.dumps(schema | {"title": "rewardtune recipe"}, indent=2) + "\n"


def starter_recipe(source: str | None, file_name: str) -> str:
    """A shipped recipe's text (comments kept) under a header saying how to use it."""
    path = recipe_path(source)
    header = (
        f"# {file_name}: a rewardtune recipe, started from {path.stem}.\n"
        "# Every key has a default (docs/config.md); `rewardtune config THIS_FILE` prints it\n"
        "# resolved. Completion in VS Code: `rewardtune config --schema > rewardtune.schema.json`,\n"
        "# then put `# yaml-language-server: $schema=rewardtune.schema.json` on the first line.\n"
        "#\n"
    )
    return header + path.read_text()

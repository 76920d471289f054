"""Recipes load and validate; `--set` overrides are typed; user mistakes name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardtune.config import DEFAULT_RECIPE, Config, load_config, shipped_recipes
from rewardtune.types import RewardtuneError

RECIPES = sorted(shipped_recipes())


def error_message(recipe: str, overrides: list[str]) -> str:
    with pytest.raises(RewardtuneError) as info:
        load_config(recipe, overrides)
    return str(info.value)


def test_the_default_recipe_is_shipped():
    assert DEFAULT_RECIPE in RECIPES
    assert load_config(None).recipe == DEFAULT_RECIPE


@pytest.mark.parametrize("name", RECIPES)
def test_every_shipped_recipe_loads_and_validates(name):
    config = load_config(name)
    assert isinstance(config, Config)
    assert config.recipe == name
    assert len(config.reward) >= 1
    assert config.ppo.batch_size % config.ppo.mini_batch_size == 0


def test_float_override_is_typed_as_float():
    config = load_config(DEFAULT_RECIPE, ["ppo.learning_rate=3e-5"])
    assert isinstance(config.ppo.learning_rate, float)
    assert config.ppo.learning_rate == 3e-5


def test_int_override_is_typed_as_int():
    config = load_config(DEFAULT_RECIPE, ["ppo.steps=7"])
    assert type(config.ppo.steps) is int
    assert config.ppo.steps == 7


def test_list_index_override_sets_the_first_rewards_weight():
    config = load_config(DEFAULT_RECIPE, ["reward.0.weight=2"])
    assert config.reward[0].weight == 2.0
    assert isinstance(config.reward[0].weight, float)


def test_list_override_becomes_a_tuple():
    config = load_config(DEFAULT_RECIPE, ["data.query_tokens=[2,8]"])
    assert config.data.query_tokens == (2, 8)
    assert isinstance(config.data.query_tokens, tuple)


def test_later_overrides_win():
    config = load_config(DEFAULT_RECIPE, ["ppo.steps=7", "ppo.steps=9"])
    assert config.ppo.steps == 9


def test_unknown_key_names_its_path():
    message = error_message(DEFAULT_RECIPE, ["ppo.learning_rat=1"])
    assert "ppo.learning_rat" in message
    assert "unknown key" in message


def test_wrong_type_names_its_path():
    assert "ppo.batch_size" in error_message(DEFAULT_RECIPE, ["ppo.batch_size=abc"])


def test_negative_learning_rate_is_rejected_naming_the_key():
    assert "ppo.learning_rate" in error_message(DEFAULT_RECIPE, ["ppo.learning_rate=-1e-4"])


def test_mini_batch_size_must_divide_batch_size():
    message = error_message(DEFAULT_RECIPE, ["ppo.batch_size=16", "ppo.mini_batch_size=5"])
    assert "mini_batch_size" in message
    assert "ppo" in message


def test_samples_per_prompt_must_divide_batch_size():
    message = error_message(DEFAULT_RECIPE, ["ppo.batch_size=16", "ppo.samples_per_prompt=3"])
    assert "ppo" in message and "samples_per_prompt (3)" in message


def test_generation_compile_needs_the_fast_engine():
    message = error_message(DEFAULT_RECIPE, ["generation.engine=hf", "generation.compile=true"])
    assert "generation.compile needs engine: fast" in message


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_group_estimators_need_two_samples_per_prompt(estimator):
    overrides = [f"ppo.advantage={estimator}", "ppo.samples_per_prompt=1"]
    message = error_message(DEFAULT_RECIPE, overrides)
    assert f"advantage {estimator}" in message and "samples_per_prompt to 2" in message


def test_grpo_scale_is_refused_for_another_estimator():
    message = error_message(DEFAULT_RECIPE, ["ppo.grpo_scale=false"])
    assert "grpo_scale applies only to advantage: grpo" in message


def test_eval_forms_and_prompt_sets_default_to_the_training_form_and_no_extra_set():
    config = Config(reward=[{"type": "vader"}])
    assert config.eval.forms is None and config.eval.prompt_sets == []
    config = load_config(DEFAULT_RECIPE, ["eval.forms=[chat]", "eval.prompt_sets=[a.txt,b]"])
    assert config.eval.forms == ["chat"] and config.eval.prompt_sets == ["a.txt", "b"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("eval.forms=[plain,html]", "eval.forms.1"),
        ("eval.forms=[]", "eval.forms"),
        ("eval.forms=[chat,chat]", "eval: forms lists 'chat' twice"),
        ("eval.prompt_sets=[detox-forum,detox-forum]", "prompt_sets lists 'detox-forum' twice"),
    ],
)
def test_bad_eval_forms_and_prompt_sets_name_the_key(override, expected):
    assert expected in error_message(DEFAULT_RECIPE, [override])


def test_estimator_keys_are_typed_and_default_to_classic_gae():
    default = Config(reward=[{"type": "vader"}]).ppo  # the library's default: classic PPO
    assert (default.advantage, default.samples_per_prompt, default.kl_in) == ("gae", 1, "reward")
    recipe = load_config(DEFAULT_RECIPE).ppo  # the demo recipe: RLOO (docs/estimators.md)
    assert (recipe.advantage, recipe.samples_per_prompt) == ("rloo", 4)
    config = load_config(
        DEFAULT_RECIPE,
        [
            "ppo.advantage=grpo",
            "ppo.samples_per_prompt=4",
            "ppo.grpo_scale=false",
            "ppo.kl_in=loss",
        ],
    ).ppo
    assert (config.advantage, config.samples_per_prompt, config.grpo_scale, config.kl_in) == (
        "grpo",
        4,
        False,
        "loss",
    )
    assert "ppo.advantage" in error_message(DEFAULT_RECIPE, ["ppo.advantage=ppo2"])


def test_zero_max_new_tokens_is_rejected():
    message = error_message(DEFAULT_RECIPE, ["generation.max_new_tokens=0"])
    assert "generation.max_new_tokens" in message


def test_unknown_recipe_lists_the_shipped_recipes():
    with pytest.raises(RewardtuneError) as info:
        load_config("no-such-recipe")
    message = str(info.value)
    assert "no-such-recipe" in message
    for name in RECIPES:
        assert name in message


def test_recipe_file_that_is_not_yaml_is_reported_as_yaml_error(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(RewardtuneError, match="YAML"):
        load_config(str(path))


def test_missing_recipe_file_is_a_user_error(tmp_path: Path):
    with pytest.raises(RewardtuneError, match="does not exist"):
        load_config(str(tmp_path / "absent.yaml"))


def test_override_on_list_index_out_of_range_is_rejected():
    message = error_message(DEFAULT_RECIPE, ["reward.5.weight=1"])
    assert "reward" in message
    assert "5" in message


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(RewardtuneError, match="KEY=VALUE"):
        load_config(DEFAULT_RECIPE, ["ppo.steps"])


def test_unknown_reward_type_is_rejected():
    message = error_message(DEFAULT_RECIPE, ["reward.0.type=nope"])
    assert "reward.0" in message
    assert "nope" in message


def test_unknown_reward_type_in_a_recipe_file_is_rejected(tmp_path: Path):
    path = tmp_path / "custom.yaml"
    path.write_text("reward:\n  - {type: telepathy}\n")
    with pytest.raises(RewardtuneError, match="telepathy"):
        load_config(str(path))


def test_an_http_reward_takes_no_input_it_would_ignore():
    message = error_message(DEFAULT_RECIPE, ["reward=[{type: http, url: 'h', input: response}]"])
    assert message.endswith(
        "reward.0.input: unknown key (check the spelling against `rewardtune config`)"
    )


@pytest.mark.parametrize("name", RECIPES)
def test_to_yaml_round_trips_through_load_config(name, tmp_path: Path):
    config = load_config(name, ["data.query_tokens=[2,8]", "ppo.learning_rate=3e-5"])
    path = tmp_path / "dumped.yaml"
    path.write_text(config.to_yaml())
    again = load_config(str(path))
    assert again.model_dump() == config.model_dump()
    assert again.recipe == name  # the dumped recipe name wins over the file's stem


@pytest.mark.parametrize("section", ["model", "data", "generation", "ppo", "eval", "run"])
def test_every_key_is_documented_in_docs_config_md(section):
    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    fields = type(getattr(Config(reward=[{"type": "vader"}]), section)).model_fields
    missing = [key for key in fields if f"`{key}`" not in doc]
    assert not missing, f"{section}: {missing} missing from docs/config.md"

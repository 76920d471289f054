"""Editor support and new recipes: the JSON Schema, `recipes --show`, `init`."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from conftest import run_cli
from rewardtune.config import load_config, shipped_recipes


@pytest.fixture(scope="module")
def schema() -> dict:
    result = run_cli("config", "--schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates_against_the_printed_schema(schema, name):
    data = yaml.safe_load(shipped_recipes()[name].read_text())
    jsonschema.validate(data, schema)


def test_schema_refuses_an_unknown_key_and_a_wrong_type(schema):
    with pytest.raises(jsonschema.ValidationError, match="lerning_rate"):
        jsonschema.validate({"ppo": {"lerning_rate": 1e-5}}, schema)
    with pytest.raises(jsonschema.ValidationError, match="'many'"):
        jsonschema.validate({"ppo": {"steps": "many"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"reward": [{"type": "classifier", "model": "m"}]}, schema)  # no label


def test_recipes_show_prints_the_file_with_its_comments():
    result = run_cli("recipes", "--show", "smollm2-detox")
    assert result.returncode == 0, result.stderr
    assert result.stdout == shipped_recipes()["smollm2-detox"].read_text()
    assert result.stdout.startswith("# ")


def test_recipes_show_of_an_unknown_name_exits_2_with_one_line():
    result = run_cli("recipes", "--show", "nope")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "unknown recipe 'nope'" in result.stderr


def test_init_writes_a_commented_recipe_that_loads_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "mine"
    result = run_cli("init", str(target), "--from", "smollm2-positive")
    assert result.returncode == 0, result.stderr
    written = tmp_path / "mine.yaml"
    text = written.read_text()
    assert text.startswith("# mine.yaml: a rewardtune recipe, started from smollm2-positive")
    assert "yaml-language-server" in text
    assert load_config(str(written)).reward == load_config("smollm2-positive").reward
    again = run_cli("init", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert written.read_text() == text


def test_schema_with_a_recipe_exits_2_with_one_line():
    result = run_cli("config", "smollm2-detox", "--schema")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--schema describes every recipe" in result.stderr

"""The bad-input matrix: each user mistake exits 2 with one line naming the problem and the fix,
no traceback, and nothing previously written is altered."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import make_gpt2, run_cli, set_args, tiny_overrides

REWARDS = Path(__file__).parent / "helpers" / "rewards.py"


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llama, prompts_file, hate_classifier):
    """Files the cases point at: recipes, data files, a finished run, a foreign adapter."""
    root = tmp_path_factory.mktemp("bad")
    (root / "ok.yaml").write_text(
        yaml.safe_dump({"reward": [{"type": "vader"}], "eval": {"enabled": False}})
    )
    (root / "notyaml.yaml").write_text("model: [unclosed\n  reward: {")
    (root / "list.yaml").write_text("- just\n- a list\n")
    (root / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (root / "nottext.jsonl").write_text('{"prompt": "a"}\n')
    (root / "fake.gguf").write_bytes(b"NOPE" + b"\0" * 64)
    (root / "empty.txt").write_text("\n\n")
    (root / "latin1.txt").write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    (root / "latin1.jsonl").write_bytes('{"text": "ol\xe9"}\n'.encode("latin-1"))
    (root / "later.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"prompt": "c"}\n')
    (root / "long.txt").write_text("the movie was great " * 100 + "\nshort one\n" * 9)
    (root / "brace.yaml").write_text(
        yaml.safe_dump({"reward": [{"type": "vader"}], "data": {"template": "f() { {text} }"}})
    )
    for name, fn in [
        ("strings", "string_reward"),
        ("count", "short_reward"),
        ("raises", "raising_reward"),
    ]:
        (root / f"{name}.yaml").write_text(
            yaml.safe_dump(
                {
                    "reward": [{"type": "python", "function": f"{REWARDS}:{fn}"}],
                    "eval": {"enabled": False},
                }
            )
        )
    (root / "label.yaml").write_text(
        yaml.safe_dump(
            {
                "reward": [{"type": "classifier", "model": str(hate_classifier), "label": "toxic"}],
                "eval": {"enabled": False},
            }
        )
    )
    gpt2 = make_gpt2(root / "gpt2")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    get_peft_model(
        AutoModelForCausalLM.from_pretrained(gpt2), LoraConfig(r=2, target_modules=["c_attn"])
    ).save_pretrained(root / "gpt2-adapter")
    run = root / "run"
    result = run_cli(
        "train",
        str(root / "ok.yaml"),
        "--run-dir",
        str(run),
        *set_args(tiny_overrides(tiny_llama, prompts_file, steps=2, **{"eval.enabled": "true"})),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    broken = root / "broken-run"
    shutil.copytree(run, broken)
    (broken / "checkpoints" / "step-2" / "optimizer.pt").unlink()
    shutil.rmtree(broken / "checkpoints" / "step-1")
    damaged = root / "damaged"
    shutil.copytree(run, damaged)
    weights = damaged / "checkpoints" / "step-2" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    leaky = root / "leaky"  # evaluates on a "prompt set" that is its training file
    shutil.copytree(run, leaky)
    config = yaml.safe_load((leaky / "config.yaml").read_text())
    config["eval"]["prompt_sets"] = [str(prompts_file)]
    (leaky / "config.yaml").write_text(yaml.safe_dump(config))
    unfinished = root / "unfinished"
    shutil.copytree(run, unfinished)
    shutil.rmtree(unfinished / "final")
    (root / "merged").mkdir()
    (root / "merged" / "keep.txt").write_text("mine")
    return {
        "root": root,
        "model": tiny_llama,
        "prompts": prompts_file,
        "run": run,
        "broken": broken,
        "damaged": damaged,
        "unfinished": unfinished,
        "leaky": leaky,
        "merged": root / "merged",
    }


T = "train {root}/ok.yaml --run-dir {new} --set model.name={model} --set data.source={prompts}"
CASES = {
    # config
    "unknown recipe": ("train no-such-recipe", "unknown recipe 'no-such-recipe'"),
    "recipe file missing": ("train {root}/missing.yaml", "does not exist"),
    "recipe not YAML": ("train {root}/notyaml.yaml", "not valid YAML"),
    "recipe not a mapping": ("train {root}/list.yaml", "must be a YAML mapping"),
    "unknown key": (T + " --set ppo.learning_rat=1", "ppo.learning_rat: unknown key"),
    "wrong type": (T + " --set ppo.batch_size=abc", "ppo.batch_size"),
    "negative learning rate": (T + " --set ppo.learning_rate=-1", "ppo.learning_rate"),
    "mini batch not dividing": (T + " --set ppo.mini_batch_size=3", "must divide batch_size"),
    "max_new_tokens 0": (T + " --set generation.max_new_tokens=0", "generation.max_new_tokens"),
    "query_tokens backwards": (T + " --set data.query_tokens=[8,2]", "query_tokens"),
    "override without =": (T + " --set ppo.steps", "expected KEY=VALUE"),
    "override index out of range": (T + " --set reward.5.weight=1", "has no item 5"),
    "run dir escapes": ("train {root}/ok.yaml --set run.dir=../../etc/x", "'..' is not allowed"),
    # data
    "data file missing": (T + " --set data.source={root}/nope.jsonl", "does not exist"),
    "data file bad line": (T + " --set data.source={root}/bad.jsonl", "line 2 is not valid JSON"),
    "missing column": (T + " --set data.source={root}/nottext.jsonl", "column 'text' not in"),
    "empty after filter": (T + " --set data.min_chars=100000", "no prompt"),
    # model
    "GGUF that is not GGUF": (T + " --set model.name={root}/fake.gguf", "not a GGUF file"),
    "model path missing": (T + " --set model.name=./no/such/model", "does not exist"),
    "adapter of another architecture": (
        T + " --set model.adapter={root}/gpt2-adapter",
        "does not fit this model",
    ),
    "adapter folder without config": (T + " --set model.adapter={root}", "no adapter_config.json"),
    "4bit without CUDA": (T + " --set model.quantization=4bit", "needs a CUDA GPU"),
    # reward
    "reward module missing": (
        T + " --set reward.0.type=python --set reward.0.function=nosuch.mod:fn",
        "cannot be imported",
    ),
    "reward file function missing": (
        T + f" --set reward.0.type=python --set reward.0.function={REWARDS}:nope",
        "has no function 'nope'",
    ),
    "reward returns strings": (
        "train {root}/strings.yaml --run-dir {new} --set model.name={model} --set data.source={prompts}",
        "scores must be numbers",
    ),
    "reward wrong count": (
        "train {root}/count.yaml --run-dir {new} --set model.name={model} --set data.source={prompts}",
        "returned 1 scores for 4 responses",
    ),
    "reward raises": (
        "train {root}/raises.yaml --run-dir {new} --set model.name={model} --set data.source={prompts}",
        "reward server unreachable",
    ),
    "label not in classifier": (
        "train {root}/label.yaml --run-dir {new} --set model.name={model} --set data.source={prompts}",
        "'nothate', 'hate'",
    ),
    # runs and checkpoints
    "run dir exists": ("train {root}/ok.yaml --run-dir {run}", "already exists; add --resume"),
    "resume of a non-run": ("train --resume {root}", "not a rewardtune run directory"),
    "checkpoint missing a file": ("train --resume {broken}", "missing optimizer.pt"),
    "evaluate unknown checkpoint": (
        "evaluate {run} --checkpoint step-99",
        "checkpoint 'step-99' not found",
    ),
    "evaluate run without final": ("evaluate {unfinished}", "no final/"),
    "generate run without final": ("generate {unfinished} --prompt hi", "no final/"),
    "generate empty prompt file": (
        "generate {model} --prompt-file {root}/empty.txt",
        "has no prompts",
    ),
    "merge into non-empty dir": ("merge {run} {root}/merged", "not empty"),
    "unknown CLI option": ("train --no-such-flag", "No such option"),
}
# the second matrix (issue 11): legitimate text, files and machines that crashed or deleted
SECOND = {
    "prompt longer than context, truncate error": (
        T + " --set data.source={root}/long.txt --set data.truncate=error",
        "data.truncate=left",
    ),
    "latin-1 txt": (T + " --set data.source={root}/latin1.txt", "line 2 is not utf-8 text"),
    "latin-1 jsonl": (T + " --set data.source={root}/latin1.jsonl", "set data.encoding"),
    "latin-1 prompt file": ("generate {model} --prompt-file {root}/latin1.txt", "--encoding"),
    "unknown encoding": (T + " --set data.encoding=klingon", "unknown encoding"),
    "template with a literal brace": ("train {root}/brace.yaml", "literal brace"),
    "template placeholder without name": (T + " --set data.template=x{{}}", "column name"),
    "later row lacks the column": (T + " --set data.source={root}/later.jsonl", "row 3 of"),
    "negative ppo seed": (T + " --set ppo.seed=-1", "ppo.seed"),
    "negative data seed": (T + " --set data.seed=-1", "data.seed"),
    "negative eval seed": (T + " --set eval.seed=-1", "eval.seed"),
    "run.dir unknown placeholder": (
        "train {root}/ok.yaml --set run.dir=runs/{{nope}}",
        "unknown placeholder {nope}",
    ),
    "run.dir stray brace": ("train {root}/ok.yaml --set run.dir=runs/{{x", "literal brace"),
    "run dir is a file": ("train {root}/ok.yaml --run-dir {root}/ok.yaml", "is a file"),
    "run dir unwritable": (
        "train {root}/ok.yaml --run-dir {root}/ok.yaml/run",
        "not a writable folder",
    ),
    "evaluate zero prompts": ("evaluate {run} --prompts 0", "--prompts"),
    "eval enabled without eval prompts": (
        T + " --set eval.enabled=true --set data.eval_fraction=0",
        "eval.enabled needs held-out prompts",
    ),
    "eval fraction rounds to no prompt": (
        T + " --set eval.enabled=true --set data.eval_fraction=0.01",
        "leaves no evaluation prompt",
    ),
    "evaluate prompt file without text": (
        "evaluate {run} --prompt-file {root}/nottext.jsonl",
        "column 'text' not in",
    ),
    "infinite learning rate": (T + " --set ppo.learning_rate=.inf", "ppo.learning_rate"),
    "NaN reward weight": (T + " --set reward.0.weight=.nan", "reward.0.weight"),
    "NaN reward scale": (T + " --set ppo.reward_scale=.nan", "ppo.reward_scale"),
    "overwrite a folder rewardtune did not write": (
        "train {root}/ok.yaml --run-dir {root}/merged --overwrite",
        "not a rewardtune run",
    ),
    "empty run.dir": ('train {root}/ok.yaml --set run.dir=""', "run.dir: empty"),
    "eval prompt set holds a training prompt": (
        T + " --set eval.enabled=true --set eval.prompt_sets=[{prompts}]",
        "holds a training prompt",
    ),
    "evaluate on a prompt set that holds a training prompt": (
        "evaluate {leaky}",
        "holds a training prompt",
    ),
    "unknown eval prompt set": (
        T + " --set eval.enabled=true --set eval.prompt_sets=[no-such-set]",
        "'no-such-set' is not a shipped prompt set",
    ),
    "evaluate damaged checkpoint": (
        "evaluate {damaged} --checkpoint step-2",
        "damaged weights.safetensors",
    ),
}
CASES |= SECOND


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_clear_line(case, world, tiny_llama, prompts_file):
    template, expected = CASES[case]
    before = {k: snapshot(world[k]) for k in ("run", "broken", "damaged", "unfinished", "merged")}
    new = world["root"] / ("new-" + case.replace(" ", "-"))
    args = template.format(**world, new=new).split()
    small = (
        set_args(
            [
                "ppo.batch_size=4",
                "ppo.mini_batch_size=2",
                "ppo.steps=1",
                "data.eval_fraction=0.2",
                "generation.max_new_tokens=4",
            ]
        )
        if args[0] == "train" and "--resume" not in args
        else []
    )
    result = run_cli(*args[:2], *small, *args[2:])  # the case's own --set flags win
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert expected in lines[-1], lines[-1]
    assert {k: snapshot(world[k]) for k in before} == before, "a failed command changed a run"
    if case in SECOND:
        assert not new.exists(), "a mistake found after the run directory was written"
    print(f"{case}: {lines[-1]}")

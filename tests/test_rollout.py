"""Rollout: batched sampling, per-sample lengths, EOS masking, and the logprobs and values kept
from sampling equal to a separate forward pass."""

from __future__ import annotations

import pytest
import torch

from rewardtune.config import GenerationConfig, ModelConfig
from rewardtune.models import load_policy
from rewardtune.sampling import rollout
from rewardtune.sampling.rollout import collate
from rewardtune.types import Minibatch


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2", "tiny_t5"])
def policy(request):
    path = request.getfixturevalue(request.param)
    return load_policy(ModelConfig(name=str(path)))


def queries(policy) -> list[torch.Tensor]:
    texts = ["the movie was", "my neighbour plays loud music every night", "x"]
    return [torch.tensor(policy.tokenizer(t)["input_ids"]) for t in texts]


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_sampling_logprobs_and_values_match_a_separate_forward_pass(policy, engine):
    torch.manual_seed(0)
    module = policy.module
    gen = GenerationConfig(max_new_tokens=7, engine=engine)
    qs = queries(policy)
    sampled = rollout.generate(
        module.lm,
        qs,
        gen,
        policy.tokenizer.pad_token_id,
        [1],
        None,
        policy.seq2seq,
        value_head=module.v_head,
    )
    fresh = rollout.score(
        module, policy.reference, qs, sampled.responses, policy.tokenizer.pad_token_id, 16
    )
    kept = rollout.score(
        module, policy.reference, qs, sampled.responses, policy.tokenizer.pad_token_id, 16, sampled
    )
    torch.testing.assert_close(kept.logprobs, fresh.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(kept.values, fresh.values, atol=1e-5, rtol=0)
    assert torch.equal(kept.ref_logprobs, fresh.ref_logprobs)
    # untouched LoRA: the reference is the policy, exactly
    torch.testing.assert_close(fresh.ref_logprobs, fresh.logprobs, atol=1e-6, rtol=0)


def test_per_sample_lengths_cap_each_response(policy):
    torch.manual_seed(0)
    gen = GenerationConfig(max_new_tokens=20)
    lengths = [2, 5, 9]
    sampled = rollout.generate(
        policy.module.lm,
        queries(policy),
        gen,
        policy.tokenizer.pad_token_id,
        [10**6],
        lengths,
        policy.seq2seq,
    )
    assert [len(r) for r in sampled.responses] == lengths


def test_response_ends_at_the_first_eos_and_keeps_it():
    tokens = torch.tensor([5, 6, 1, 7, 1])
    assert rollout.end_of_response(tokens, [1]) == 3
    assert rollout.end_of_response(torch.tensor([5, 6, 7]), [1]) == 3
    assert rollout.end_of_response(torch.tensor([9, 6, 7]), [1, 9]) == 1


def test_batched_sampling_equals_sampling_alone_for_greedy_decoding(policy):
    gen = GenerationConfig(max_new_tokens=6, do_sample=False)
    qs = queries(policy)
    pad = policy.tokenizer.pad_token_id
    together = rollout.generate(
        policy.module.lm, qs, gen, pad, [10**6], None, policy.seq2seq
    ).responses
    alone = [
        rollout.generate(policy.module.lm, [q], gen, pad, [10**6], None, policy.seq2seq).responses[
            0
        ]
        for q in qs
    ]
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a, b), "left padding changed what the model generates"


def test_trim_drops_all_pad_columns_and_cuts_every_per_token_field_with_the_response():
    per_token = torch.tensor([[0.5, 0.0, 0.0], [0.1, 0.2, 0.0]])
    batch = Minibatch(
        query_ids=torch.tensor([[0, 0, 5], [0, 4, 5]]),
        query_mask=torch.tensor([[0, 0, 1], [0, 1, 1]]),
        response_ids=torch.tensor([[7, 0, 0], [7, 8, 0]]),
        response_mask=torch.tensor([[1, 0, 0], [1, 1, 0]]),
        old_logprobs=per_token,
        old_values=per_token + 1,
        ref_logprobs=per_token + 2,
        advantages=per_token + 3,
        returns=per_token + 4,
        loss_mask=per_token + 5,
    )
    out = batch.trim()
    assert out.query_ids.tolist() == [[0, 5], [4, 5]]
    assert out.query_mask.tolist() == [[0, 1], [1, 1]]
    assert out.response_ids.tolist() == [[7, 0], [7, 8]]
    for offset, name in enumerate(Minibatch.PER_TOKEN):
        assert getattr(out, name).tolist() == (per_token[:, :2] + offset).tolist(), name


def test_index_takes_the_same_rows_of_every_field():
    batch = collate([torch.tensor([5]), torch.tensor([4, 5])], [torch.tensor([7, 8])] * 2, 0, "cpu")
    rows = batch.index(torch.tensor([1]))
    assert rows.query_ids.tolist() == [[4, 5]] and rows.query_mask.tolist() == [[1, 1]]
    assert batch.index(slice(0, 1)).trim().query_ids.tolist() == [[5]]
    assert len(rows) == 1 and rows.response_ids.tolist() == [[7, 8]]


def test_the_transformers_floor_admits_only_versions_where_the_neutral_pinning_holds():
    """hf_generation_config pins repetition_penalty=1.0, no_repeat_ngram_size=0, ... to neutral
    values; transformers 4.x replaces a value equal to its global default with the model's own
    generation_config (so a model's repetition_penalty came back). The floor in pyproject.toml
    must be a 5.x release no newer than the one these tests run on
    (test_model_generation_defaults_change_neither_engine checks the pinning itself)."""
    import re
    from importlib.metadata import version

    from packaging.version import Version

    from conftest import ROOT

    text = (ROOT / "pyproject.toml").read_text()
    floor = Version(re.search(r'"transformers>=([0-9.]+)"', text).group(1))
    assert Version("5.0") <= floor <= Version(version("transformers")), floor

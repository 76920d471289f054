"""The evaluation's log-probabilities: kept from sampling where the model that drew a response
is the one asked about, one reference pass otherwise; both equal fresh forward passes."""

from __future__ import annotations

import numpy as np
import torch

from rewardtune.config import GenerationConfig, ModelConfig
from rewardtune.core.tensors import sequence_sum
from rewardtune.evaluation.samples import Draw, reference_sums, sample
from rewardtune.models import load_policy
from rewardtune.sampling import rollout
from rewardtune.types import Prompt
from test_fast_rollout import perturb_lora


def test_kept_and_reference_logprob_sums_equal_fresh_forward_passes(tiny_llama):
    policy = load_policy(ModelConfig(name=str(tiny_llama)))
    perturb_lora(policy.module.lm)  # the adapter changes the logits: policy != reference
    texts = ["the cat sat", "a dog ran on the", "hello", "one two three four five"]
    prompts = [Prompt(t, torch.tensor(policy.tokenizer(t)["input_ids"])) for t in texts]
    draw = Draw(
        GenerationConfig(max_new_tokens=12), batch_size=3, seed=0, max_new_tokens=12, chat=False
    )
    with policy.reference() as ref_lm:
        before = sample(policy, ref_lm, prompts, draw)
    after = sample(policy, policy.module.lm, prompts, draw)
    pad = policy.tokenizer.pad_token_id
    queries = [p.input_ids for p in prompts]
    for side in (before, after):
        fresh = rollout.score(policy.module, policy.reference, queries, side.ids, pad, 16)
        mask = fresh.response_mask
        fresh_policy = sequence_sum(fresh.logprobs, mask).numpy()
        fresh_ref = sequence_sum(fresh.ref_logprobs, mask).numpy()
        np.testing.assert_allclose(reference_sums(policy, prompts, side), fresh_ref, atol=1e-4)
        kept, counts = side.logprob_sums(), side.token_counts()
        np.testing.assert_array_equal(counts, mask.sum(1).numpy())
        drawn_by = fresh_ref if side is before else fresh_policy
        np.testing.assert_allclose(kept, drawn_by, atol=1e-4)
    assert not np.allclose(fresh_policy, fresh_ref, atol=1e-2), "the adapter changed nothing"

"""generation.engine=fast draws what generate() draws: the same tokens for the same seed,
logprobs and values equal to a separate forward pass, and a logged fallback to hf where it
cannot (encoder-decoder models, extra processors in the model's generation_config)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from torch._dynamo.utils import counters

from rewardtune.config import GenerationConfig, ModelConfig
from rewardtune.models import load_policy
from rewardtune.models.cpu_linear import use_onednn
from rewardtune.models.hub import base_model
from rewardtune.sampling import fast as decoding
from rewardtune.sampling import rollout
from rewardtune.sampling.rollout import eval_mode

TEXTS = ["the movie was", "my neighbour plays loud music every night", "x", "what a lovely day"]
LENGTHS = [5, 16, 9, 12]
SETTINGS = {
    "default-sampling": {},
    "top-k-top-p-temperature-min-new": {
        "top_k": 20,
        "top_p": 0.8,
        "temperature": 0.7,
        "min_new_tokens": 4,
    },
    "greedy": {"do_sample": False},
}
EOS = {"rare-eos": [1], "frequent-eos": list(range(1, 120))}  # frequent: rows stop early


@pytest.fixture(
    scope="module", params=["tiny_llama", "tiny_gpt2", "tiny_llama+onednn", "tiny_gpt2+onednn"]
)
def policy(request):
    """Each tiny model with torch's dense layers, and with every layer on oneDNN (the tiny
    layers are below ``cpu_linear.MIN_WEIGHTS``, so the default swaps none of them)."""
    name, _, kernels = request.param.partition("+")
    path = request.getfixturevalue(name)
    policy = load_policy(ModelConfig(name=str(path), cpu_linear="torch"))
    if kernels:
        assert use_onednn(policy.module, min_weights=0) > 0
    perturb_lora(policy.module.lm)
    return policy


def perturb_lora(lm) -> None:
    """Non-zero LoRA B, so the adapter changes the logits, and sharper attention, so that
    positions and the padding mask change them too (a fresh tiny model attends uniformly)."""
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in lm.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=rng) * 0.5)
            elif any(k in name for k in ("q_proj", "k_proj", "c_attn")) and "lora" not in name:
                param.mul_(10)


def queries(policy) -> list[torch.Tensor]:
    return [torch.tensor(policy.tokenizer(t)["input_ids"]) for t in TEXTS]


def sample(policy, engine: str, seed: int = 0, eos=(1,), lengths=LENGTHS, sampler=None, **settings):
    """Sampled as training samples: logprobs at the sampling temperature."""
    torch.manual_seed(seed)
    gen = GenerationConfig(max_new_tokens=16, engine=engine, **settings)
    return rollout.generate(
        policy.module.lm,
        queries(policy),
        gen,
        policy.tokenizer.pad_token_id,
        list(eos),
        lengths,
        policy.seq2seq,
        value_head=policy.module.v_head,
        sampler=sampler,
        logprob_temperature=rollout.sampling_temperature(gen),
    )


def no_generate(*args, **kwargs):
    raise AssertionError("engine=fast called lm.generate")


@pytest.mark.parametrize("eos", EOS.values(), ids=EOS.keys())
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_fast_engine_samples_the_same_tokens_as_generate_for_the_same_seed(
    policy, settings, eos, monkeypatch
):
    hf = sample(policy, "hf", eos=eos, **settings)
    monkeypatch.setattr(policy.module.lm, "generate", no_generate)
    fast = sample(policy, "fast", eos=eos, **settings)
    assert [r.tolist() for r in fast.responses] == [r.tolist() for r in hf.responses]
    assert all(len(r) <= n for r, n in zip(fast.responses, LENGTHS, strict=True))
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.values, hf.values, atol=1e-5, rtol=0)


def test_fast_engine_consumes_the_seed(policy):
    """Different seeds draw different tokens: the equality above is not a constant output."""
    first, second = sample(policy, "fast", seed=0), sample(policy, "fast", seed=1)
    assert [r.tolist() for r in first.responses] != [r.tolist() for r in second.responses]


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_fast_engine_logprobs_and_values_match_a_separate_forward_pass(policy, temperature):
    """At the sampling temperature: the update's forward must see the kept logprobs' ratio 1."""
    sampled = sample(
        policy, "fast", eos=EOS["frequent-eos"], min_new_tokens=2, temperature=temperature
    )
    pad = policy.tokenizer.pad_token_id
    args = (policy.module, policy.reference, queries(policy), sampled.responses, pad, 16)
    fresh = rollout.score(*args, temperature=temperature)
    kept = rollout.score(*args, sampled, temperature)
    torch.testing.assert_close(kept.logprobs, fresh.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(kept.values, fresh.values, atol=1e-5, rtol=0)
    # the perturbed adapter matters: the policy is not the reference
    assert (fresh.logprobs - fresh.ref_logprobs).abs().max() > 1e-3
    if temperature != 1.0:  # and the temperature matters: the raw logits' logprobs differ
        untempered = rollout.score(*args)
        assert (untempered.logprobs - kept.logprobs).abs().max() > 1e-2


def test_model_generation_defaults_change_neither_engine(policy, monkeypatch):
    before = {e: sample(policy, e, do_sample=False).responses for e in ("hf", "fast")}
    config = policy.module.lm.generation_config
    for key, value in {
        "repetition_penalty": 5.0,
        "no_repeat_ngram_size": 1,
        "num_beams": 3,
    }.items():
        monkeypatch.setattr(config, key, value, raising=False)
    for engine, responses in before.items():
        after = sample(policy, engine, do_sample=False).responses
        assert [r.tolist() for r in after] == [r.tolist() for r in responses], engine


def test_a_processor_only_generate_applies_sends_fast_to_hf(policy, monkeypatch, caplog):
    hf = sample(policy, "hf", do_sample=False).responses
    monkeypatch.setattr(policy.module.lm.generation_config, "suppress_tokens", [int(hf[1][0])])
    suppressed = sample(policy, "hf", do_sample=False).responses
    assert suppressed[1][0] != hf[1][0]
    with caplog.at_level(logging.WARNING, logger="rewardtune"):
        fast = sample(policy, "fast", do_sample=False).responses
    assert [r.tolist() for r in fast] == [r.tolist() for r in suppressed]
    assert "generation_config sets suppress_tokens; using hf" in caplog.text


def test_graph_key_changes_when_the_adapter_is_disabled(policy):
    """A captured CUDA graph replays the adapter state it saw: the key must see the switch."""
    lm, head = policy.module.lm, policy.module.v_head
    on = decoding._weights_key(lm, head)
    with lm.disable_adapter():
        off = decoding._weights_key(lm, head)
    assert on != off
    assert decoding._weights_key(lm, head) == on


def test_encoder_decoder_falls_back_to_hf_with_one_warning(tiny_t5, caplog):
    policy = load_policy(ModelConfig(name=str(tiny_t5)))
    perturb_lora(policy.module.lm)
    hf = sample(policy, "hf")
    sampler = rollout.Sampler()  # warnings are given once per sampler (the trainer holds one)
    with caplog.at_level(logging.WARNING, logger="rewardtune"):
        fast = sample(policy, "fast", sampler=sampler)
        sample(policy, "fast", sampler=sampler)
    assert [r.tolist() for r in fast.responses] == [r.tolist() for r in hf.responses]
    message = "generation.engine=fast is not supported for encoder-decoder models; using hf"
    assert [r.getMessage() for r in caplog.records].count(message) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_engine_samples_the_same_tokens_as_generate(tiny_llama):
    policy = load_policy(ModelConfig(name=str(tiny_llama), dtype="float32"), device="cuda")
    perturb_lora(policy.module.lm)
    sampler = rollout.Sampler()
    hf = sample(policy, "hf", eos=EOS["frequent-eos"])
    for _ in range(2):  # the second call replays the graph captured by the first
        fast = sample(policy, "fast", eos=EOS["frequent-eos"], sampler=sampler)
        assert [r.tolist() for r in fast.responses] == [r.tolist() for r in hf.responses]
    assert len(sampler.fast.graphs) == 1 and not sampler.fast.graphs_failed
    with policy.module.lm.disable_adapter():
        reference_hf = sample(policy, "hf", eos=EOS["frequent-eos"])
        reference_fast = sample(policy, "fast", eos=EOS["frequent-eos"], sampler=sampler)
    assert [r.tolist() for r in reference_fast.responses] == [
        r.tolist() for r in reference_hf.responses
    ]
    assert len(sampler.fast.graphs) == 2


@pytest.mark.slow
def test_compiled_decode_step_draws_the_same_tokens_and_logprobs(tiny_llama):
    """generation.compile: the one-token step through torch.compile (on CUDA then graphed)
    samples what the eager step samples, and its kept logprobs still equal a fresh forward."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_policy(ModelConfig(name=str(tiny_llama), dtype="float32"), device=device)
    perturb_lora(policy.module.lm)
    sampler = rollout.Sampler()
    eager = sample(policy, "fast", eos=EOS["frequent-eos"], min_new_tokens=2)
    compiled_before = counters["stats"]["unique_graphs"]
    for _ in range(2):  # the second call reuses the compiled (and on CUDA, captured) step
        compiled = sample(
            policy, "fast", eos=EOS["frequent-eos"], min_new_tokens=2, compile=True, sampler=sampler
        )
        assert [r.tolist() for r in compiled.responses] == [r.tolist() for r in eager.responses]
        torch.testing.assert_close(compiled.logprobs, eager.logprobs, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] > compiled_before  # the step did compile
    assert not sampler.fast.graphs_failed
    assert len(sampler.fast.graphs) == (device == "cuda")


def test_cache_keyword_follows_the_transformers_version_and_refuses_cache_position():
    def current(input_ids=None, attention_mask=None, position_ids=None, cache=None): ...

    def earlier_5x(input_ids=None, position_ids=None, past_key_values=None, use_cache=None): ...

    def with_cache_position(input_ids=None, past_key_values=None, cache_position=None): ...

    def no_cache(input_ids=None, attention_mask=None): ...

    assert decoding.cache_argument(current) == "cache"
    assert decoding.cache_argument(earlier_5x) == "past_key_values"
    assert decoding.cache_argument(with_cache_position) is None
    assert decoding.cache_argument(no_cache) is None


def test_a_model_taking_past_key_values_decodes_the_same_tokens(policy, monkeypatch):
    """transformers 5.17 (the GPU image's) names the cache past_key_values: fast still runs."""
    base = base_model(policy.module.lm)
    forward = base.forward

    def renamed(
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        return forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    hf = sample(policy, "hf")
    monkeypatch.setattr(base, "forward", renamed)
    monkeypatch.setattr(policy.module.lm, "generate", no_generate)
    assert decoding.unsupported_reason(policy.module.lm, seq2seq=False) is None
    fast = sample(policy, "fast")
    assert [r.tolist() for r in fast.responses] == [r.tolist() for r in hf.responses]


@pytest.mark.parametrize("adapter", ["policy", "reference"])
def test_one_token_step_traces_as_one_graph_so_a_cuda_graph_can_record_it(policy, adapter):
    """CUDA graph capture fails on a host sync (.item(), a branch on a tensor's value) inside
    the decode step. On CPU, TorchDynamo finds the same things as graph breaks: the step of
    the policy (adapter on) and of the reference (adapter off) must trace whole."""
    import torch._dynamo as dynamo

    lm, head = policy.module.lm, policy.module.v_head
    batch, prompt_len = 3, 5
    step = decoding._EagerStep(lm, head, prompt_len + 4)
    input_ids = torch.randint(
        3, 50, (batch, prompt_len), generator=torch.Generator().manual_seed(0)
    )
    attention = torch.ones(batch, prompt_len, dtype=torch.long)
    attention[0, :2] = 0  # a left-padded row
    mask = torch.zeros(batch, step.cache_len, dtype=torch.long)
    mask[:, :prompt_len] = attention
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    switch = lm.disable_adapter() if adapter == "reference" else contextlib.nullcontext()
    dynamo.reset()
    with switch, eval_mode(lm), eval_mode(head), torch.no_grad():
        step.prefill(input_ids, mask, positions)
        mask[:, prompt_len] = 1
        token = input_ids[:, -1:]
        explained = dynamo.explain(step.__call__)(token, mask, positions[:, -1:] + 1)
    reasons = [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1 and not reasons, reasons


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bfloat16 equivalence runs on a CUDA GPU")
@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_bfloat16_sampling_logprobs_match_the_training_forward_within_1e_2(tiny_llama, engine):
    """In bfloat16 the logprobs kept from sampling become the update's old logprobs: their gap
    to the training forward must not move the ratio (issue 10: recompute them if > 1e-2)."""
    policy = load_policy(ModelConfig(name=str(tiny_llama), dtype="bfloat16"), device="cuda")
    perturb_lora(policy.module.lm)
    hf = sample(policy, "hf", eos=EOS["frequent-eos"], min_new_tokens=2)
    sampled = sample(policy, engine, eos=EOS["frequent-eos"], min_new_tokens=2)
    assert [r.tolist() for r in sampled.responses] == [r.tolist() for r in hf.responses]
    pad = policy.tokenizer.pad_token_id
    args = (policy.module, policy.reference, queries(policy), sampled.responses, pad, 16)
    fresh, kept = rollout.score(*args), rollout.score(*args, sampled)
    gap = float(((kept.logprobs - fresh.logprobs) * fresh.response_mask).abs().max())
    print(f"bfloat16 {engine}: largest |sampling - training forward| logprob gap {gap:.3e}")
    assert gap < 1e-2, gap

"""Memory switches: log-probabilities through the LM head in chunks of response positions
(the same values and gradients as the whole logits), and gradient checkpointing in the update
(the same gradients, dropout still off, ratio 1 before the weights move)."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import tiny_overrides
from rewardtune import PPOTrainer, load_config
from rewardtune.config import LoraConfig, ModelConfig
from rewardtune.models.hub import output_head
from rewardtune.models.policy import load_policy
from rewardtune.sampling.rollout import collate, eval_mode
from rewardtune.types import RewardtuneError
from test_fast_rollout import perturb_lora


def _batch(policy, lengths=((3, 5), (6, 2), (4, 7))):
    """Three (query, response) pairs of different lengths: padding on both sides."""
    gen = torch.Generator().manual_seed(0)
    vocab = policy.module.lm.config.vocab_size
    queries = [torch.randint(5, vocab, (q,), generator=gen) for q, _ in lengths]
    responses = [torch.randint(5, vocab, (r,), generator=gen) for _, r in lengths]
    return collate(queries, responses, policy.tokenizer.pad_token_id, "cpu")


def _logprobs_and_grads(module, batch, chunk):
    module.logprob_chunk = chunk
    module.eval()  # no dropout, as the update runs
    module.zero_grad(set_to_none=True)
    logprobs, values = module(**batch.inputs(), return_logprobs=True)
    mask = batch.response_mask
    ((logprobs * mask).sum() + (values * mask).sum()).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return logprobs.detach(), values.detach(), grads


@pytest.mark.parametrize("model, lora", [("llama", True), ("gpt2", False)])
def test_chunked_logprobs_equal_the_whole_logits_in_values_and_gradients(request, model, lora):
    path = request.getfixturevalue(f"tiny_{model}")
    cfg = ModelConfig(name=str(path), lora=LoraConfig(dropout=0.0) if lora else None)
    policy = load_policy(cfg, with_reference=False)
    module, batch = policy.module, _batch(policy)
    whole = _logprobs_and_grads(module, batch, None)
    heads: list[tuple] = []
    hook = output_head(module.lm).register_forward_hook(lambda m, i, o: heads.append(o.shape))
    try:
        chunked = _logprobs_and_grads(module, batch, 3)
    finally:
        hook.remove()
    assert module.chunks_logprobs()
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-5, atol=1e-5)
    assert chunked[2].keys() == whole[2].keys() and len(whole[2]) > 2
    for name, grad in whole[2].items():
        torch.testing.assert_close(chunked[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # never more than 3 positions through the head at once (7 response columns: 3 + 3 + 1,
    # each once forward and once recomputed in the backward), plus the model's own one
    # position (logits_to_keep=1)
    assert max(shape[1] for shape in heads) == 3
    assert sorted(shape[1] for shape in heads) == [1, 1, 1, 3, 3, 3, 3]


def test_chunked_logprobs_without_gradients_equal_the_whole_logits(tiny_llama):
    policy = load_policy(ModelConfig(name=str(tiny_llama), logprob_chunk=2))
    module, batch = policy.module, _batch(policy)
    with torch.inference_mode():
        chunked, _ = module(**batch.inputs(), return_logprobs=True)
        module.logprob_chunk = None
        whole, _ = module(**batch.inputs(), return_logprobs=True)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_chunked_logprobs_at_a_temperature_equal_the_whole_logits_at_it(tiny_llama):
    policy = load_policy(ModelConfig(name=str(tiny_llama), logprob_chunk=2))
    perturb_lora(policy.module.lm)  # sharper logits, so that the temperature matters
    module, batch = policy.module, _batch(policy)
    with torch.inference_mode(), eval_mode(module):  # the perturbed adapter's dropout off
        chunked, _ = module(**batch.inputs(), return_logprobs=True, temperature=0.5)
        at_one, _ = module(**batch.inputs(), return_logprobs=True)
        module.logprob_chunk = None
        logits, _ = module(**batch.inputs())
    expected = torch.log_softmax(logits.float() / 0.5, -1)
    expected = expected.gather(-1, batch.response_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)
    assert (chunked - at_one).abs().max() > 1e-2


def test_logprob_chunk_on_an_encoder_decoder_warns_and_computes_the_whole_logits(tiny_t5, caplog):
    policy = load_policy(ModelConfig(name=str(tiny_t5), logprob_chunk=2))
    assert not policy.module.chunks_logprobs()
    assert "model.logprob_chunk has no effect on T5ForConditionalGeneration" in caplog.text


@pytest.mark.parametrize("lora", [True, False])
def test_gradient_checkpointing_recomputes_layers_with_the_same_gradients_and_no_dropout(
    tiny_llama, lora
):
    lora_cfg = LoraConfig(dropout=0.3) if lora else None  # dropout that must stay off
    torch.manual_seed(0)  # the same LoRA initialisation in both
    plain = load_policy(ModelConfig(name=str(tiny_llama), lora=lora_cfg), with_reference=False)
    torch.manual_seed(0)
    checkpointed = load_policy(
        ModelConfig(name=str(tiny_llama), lora=lora_cfg, gradient_checkpointing=True),
        with_reference=False,
    )
    batch = _batch(plain)
    for policy in (plain, checkpointed):
        policy.module.eval()  # as the update runs it
    layers = checkpointed.module.lm.get_decoder().layers
    calls = []
    hooks = [layer.mlp.register_forward_pre_hook(lambda *a: calls.append(1)) for layer in layers]
    try:
        expected = _logprobs_and_grads(plain.module, batch, None)
        got = _logprobs_and_grads(checkpointed.module, batch, None)
    finally:
        for hook in hooks:
            hook.remove()
    # each layer's MLP runs again when the backward recomputes its layer
    assert len(calls) == 2 * len(layers)
    with torch.inference_mode():  # sampling's scoring: no gradients, no recompute
        scored, _ = checkpointed.module(**batch.inputs(), return_logprobs=True)
    torch.testing.assert_close(got[0], scored, rtol=0, atol=0)  # no dropout: ratio 1
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-6)
    for name, grad in expected[2].items():
        torch.testing.assert_close(got[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert not any(m.training for m in checkpointed.module.modules())  # modes restored


def test_a_model_without_gradient_checkpointing_support_is_refused_in_one_line(
    tiny_llama, monkeypatch
):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    with pytest.raises(RewardtuneError, match="LlamaForCausalLM does not support it"):
        load_policy(ModelConfig(name=str(tiny_llama), gradient_checkpointing=True))


def test_logprob_chunk_must_be_positive():
    with pytest.raises(ValueError, match="logprob_chunk"):
        ModelConfig(logprob_chunk=0)


def test_training_with_both_switches_steps_as_without_and_keeps_ratio_one(
    tmp_path, tiny_llama, prompts_file
):
    """One PPO step with gradient checkpointing and chunked log-probabilities: the same stats
    as the plain run (sampling, scoring, reference and update all through the chunked head)."""
    recipe = tmp_path / "memory.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}]}))
    base = {
        "ppo.batch_size": 4,
        "ppo.mini_batch_size": 4,
        "ppo.ppo_epochs": 1,
        "ppo.learning_rate": 1e-2,
        "model.lora.dropout": 0.3,
    }
    history = []
    for extra in ({}, {"model.gradient_checkpointing": "true", "model.logprob_chunk": 3}):
        values = tiny_overrides(tiny_llama, prompts_file, **(base | extra))
        trainer = PPOTrainer(load_config(str(recipe), values))
        assert trainer.policy.module.gradient_checkpointing == bool(extra)
        batch = trainer.batch_for_step(0)
        responses = trainer.generate(batch.input_ids)
        history.append(trainer.step(batch.input_ids, responses, [len(r) / 6 for r in responses]))
    plain, switched = history
    assert switched["ppo/policy/approxkl"] < 1e-6  # ratio 1 on the single minibatch
    for key in ("objective/kl", "ppo/loss/policy", "ppo/loss/value", "ppo/grad_norm"):
        assert switched[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key

"""PPO step benchmark. Prints figures; never run by the test suite.

W1 (CPU): SmolLM2-135M-Instruct (GGUF, float32), 2 threads, LoRA r=16 alpha=16 dropout 0.05,
batch 16, mini-batch 4, 1 PPO epoch, 32 new tokens (top_k=0, top_p=1.0), VADER reward on the
response, 64 prompts of 4-12 tokens, one warm-up step then 3 timed steps, with
``generation.engine`` fast (the default) or hf (``--engine``).

W1G (CPU): W1 in groups, against TRL's ``GRPOTrainer`` (``benchmarks/trl_grpo_w1g.py``):
``advantage: grpo``, 4 prompts x ``samples_per_prompt`` 4 = batch 16, mini-batch 16 (one
forward + backward and one optimizer step per batch, as TRL's ``per_device_train_batch_size``
16), 1 epoch; W1's model, LoRA, 32 new tokens, VADER reward and prompts otherwise. The
recipe's KL penalty stays (in the reward, so the reference's forward runs each step; TRL's
default ``beta`` 0 runs none).

W2 (one CUDA GPU): a randomly initialised model with TinyLlama-1.1B-Chat-v1.0's exact config
(Llama, hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000, untied LM
head), built from the config and saved with a tiny byte-level BPE tokenizer (nothing is
downloaded), bfloat16, LoRA r=16 alpha=16 dropout 0.05 (peft's default q_proj/v_proj), global
batch 64 of prompts of exactly 64 token ids drawn at random from the vocab, exactly 128 new tokens
(min_new_tokens = max_new_tokens = 128, so EOS never ends a response early), top_k=0, top_p=1.0,
1 PPO epoch, mini-batch 16. The reward is a token-count function of the response ids (the
fraction of tokens in the lower half of the vocab): the tiny tokenizer knows a few hundred ids,
so the decoded text (decoded anyway, as the classic loop does) says little. Each engine of
``generation.engine`` (hf, fast) gets a fresh trainer, one warm-up step and N timed steps, in one
process. Printed per engine:

- rollout tokens/s = generated tokens / ``time/rollout`` (sampling plus the reference's scoring
  forward, the trainer's own stat); ``sampling tokens/s`` divides by ``generate()`` alone.
- update tokens/s = (query + response tokens) * ppo_epochs / ``time/update``.
- samples/s = global batch / (generate + reward + step) seconds.
- peak GPU memory = ``torch.cuda.max_memory_allocated``, reset before each engine's trainer
  (``gpu_memory_before_gb``: what was still allocated then; hf runs first).
- MFU of the update = update FLOPs / ``time/update`` / the device's peak dense bf16 FLOP/s
  (989.4e12 for H100 SXM and H200; ``--peak-tflops`` overrides).

Update FLOPs, per sequence of S = query + response tokens and R response tokens, per PPO epoch.
The base weights are frozen (LoRA), so they get no weight gradients: a frozen matmul costs
2 FLOPs per weight per token forward and 2 backward (gradient to its input), 4 in all::

    4 * N_body * S                        dense layers (q, k, v, o, gate, up, down; norms)
  + 4 * N_head * (R + 1)                  LM head: logits only on the response positions
                                          (logits_to_keep = R + 1), where the loss reads them
  + 6 * L * d * S * (S + 1)               attention scores: forward QK^T and AV over the causal
                                          context, 2 * 2 * d * t FLOPs at position t, summed over
                                          t = 1..S and L layers = 2 * L * d * S * (S + 1); the
                                          backward is twice that (dQ, dK, dV, dP)
  + 6 * N_trainable * S                   LoRA and value head (forward, input and weight
                                          gradients); about 0.3% of the total for W2

N_body = frozen parameters minus the input embedding (a lookup, not a matmul) and the LM head;
N_head = vocab * hidden; L = layers, d = hidden size. For W2: N_body = 0.969e9, N_head = 65.5e6,
S = 192, R = 128, about 0.79 TFLOP per sequence, 50.6 TFLOP per update. Elementwise work
(RMSNorm, SiLU, softmax, rotary, loss) is not counted.

    python benchmarks/ppo_step.py --workload W1 [--engine fast|hf]
    python benchmarks/ppo_step.py --workload W1G [--steps 3]
    python benchmarks/ppo_step.py --workload W2 [--steps 3] [--peak-tflops 989.4]
        [--engines hf fast fast-compiled]
    python benchmarks/ppo_step.py --workload W2 --cpu-smoke   # tiny shapes, float32, CPU

``--cpu-smoke`` runs W2's code path on CPU with 2 layers, hidden 256, batch 8, 16 prompt tokens
and 16 new tokens, only to show the script works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rewardtune import PPOTrainer, load_config
from rewardtune.models import enable_cpu_fast_paths

W1_PROMPTS = [
    "The restaurant on the corner",
    "My flight was delayed and",
    "I bought this blender because",
    "The hotel room smelled like",
    "After the concert we walked",
    "Our new neighbour keeps",
    "The customer service agent told me",
    "I watched the film twice and",
    "This phone case arrived",
    "The train left without",
    "My sister's wedding was",
    "The book's final chapter",
]
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12}  # dense, no sparsity
TARGET_ROLLOUT_SPEEDUP = 3.0
TARGET_UPDATE_MFU = 0.30
TARGET_SAMPLING_SHARE = 0.70  # of the memory-bandwidth limit, engine fast at batch 64


# --- shared: the config and the classic loop, timed ----------------------------------


def recipe_config(overrides: dict):
    """The smollm2-positive recipe with ``--set``-style overrides (values JSON-encoded)."""
    return load_config("smollm2-positive", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def quiet_libraries() -> None:
    """No progress bars or deprecation chatter from transformers between the figures."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_step(
    trainer: PPOTrainer,
    queries: list[torch.Tensor],
    reward: Callable[[list[torch.Tensor], list[str]], list[float]],
) -> dict[str, float]:
    """One classic-loop step (generate, decode + reward, step), each part timed.

    ``reward(responses, texts)`` scores the responses. Rollout and update seconds are the
    trainer's own ``time/rollout`` and ``time/update``.
    """
    synchronize()
    start = time.perf_counter()
    with trainer.sampling_rng():  # the draws of the classic generate(), as a record
        generation = trainer.sample(queries)
    responses = generation.responses
    synchronize()
    t_gen = time.perf_counter()
    scores = reward(responses, trainer.decode(responses))
    t_reward = time.perf_counter()
    # the sampling passes' logprobs and values travel with the generation; the reward's
    # seconds are passed so that throughput/* counts the reward too
    stats = trainer.ppo_step(queries, generation, scores, reward_seconds=t_reward - t_gen).to_dict()
    synchronize()
    end = time.perf_counter()
    return {
        "total": end - start,
        "generate": t_gen - start,
        "rollout": stats["time/rollout"],
        "reward": t_reward - t_gen,
        "update": stats["time/update"],
        "tokens": sum(len(r) for r in responses),
        "update_tokens": trainer.ppo.ppo_epochs
        * sum(len(q) + len(r) for q, r in zip(queries, responses, strict=True)),
        "sequences": len(responses),
        "query_tokens": sum(len(q) for q in queries) / len(queries),
        "response_tokens": sum(len(r) for r in responses) / len(responses),
    }


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- W1 -------------------------------------------------------------------------------


def w1_prompt_file(folder: Path) -> Path:
    """64 prompts of 4-12 tokens (the openings above, repeated with a counter)."""
    lines = [f"{W1_PROMPTS[i % len(W1_PROMPTS)]} {'again ' * (i % 4)}".strip() for i in range(64)]
    path = folder / "w1_prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


# W1G: W1's shapes in groups of 4 responses to a prompt, TRL GRPOTrainer's batch and loss
W1G_OVERRIDES = {
    "ppo.advantage": "grpo",  # group mean and std, as GRPOTrainer's scale_rewards="group"
    "ppo.samples_per_prompt": 4,
    "ppo.mini_batch_size": 16,  # the whole batch, as per_device_train_batch_size=16
}


def w1_config(prompts: Path, engine: str, overrides: dict | None = None):
    return recipe_config(
        {
            "model.name": "smollm2-135m-instruct",
            "model.lora": {"r": 16, "alpha": 16, "dropout": 0.05},
            "data.source": str(prompts),
            "data.eval_fraction": 0.0,
            "generation.max_new_tokens": 32,
            "generation.min_new_tokens": 32,
            "generation.top_k": 0,
            "generation.top_p": 1.0,
            "ppo.batch_size": 16,
            "ppo.mini_batch_size": 4,
            "ppo.ppo_epochs": 1,
            "ppo.steps": 4,
            "ppo.advantage": "gae",  # classic PPO with a value head, as TRL's step()
            "ppo.samples_per_prompt": 1,
            "generation.engine": engine,
            "eval.enabled": False,  # no held-out prompts (data.eval_fraction 0)
            **(overrides or {}),
        }
    )


def vader_steps(trainer: PPOTrainer, timed_steps: int) -> list[dict[str, float]]:
    """One warm-up step and ``timed_steps`` timed ones of the classic loop, rewarded by VADER's
    compound score of the response (W1's reward)."""
    from rewardtune.rewards.lexicon import VaderReward

    vader = VaderReward(input="response")
    rows = []
    for i, batch in enumerate(trainer.dataloader):
        if i > timed_steps:
            break
        rows.append(
            timed_step(
                trainer,
                batch["input_ids"],
                lambda _, texts, batch=batch: vader(batch["query"], texts),
            )
        )
    return rows


def run_w1(timed_steps: int, engine: str, overrides: dict | None = None) -> dict:
    """W1 (or, with ``W1G_OVERRIDES``, W1G): one warm-up step, then ``timed_steps`` timed."""
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        config = w1_config(w1_prompt_file(Path(tmp)), engine, overrides)
        trainer = PPOTrainer(config)
        rows = vader_steps(trainer, timed_steps)
    mean = mean_rows(rows[1:])  # the first step is the warm-up
    work = w1_work(trainer, mean)
    return {
        "seconds_per_step": mean["total"],
        "generate_s": mean["generate"],
        "rollout_s": mean["rollout"],
        "reward_s": mean["reward"],
        "update_s": mean["update"],
        "samples_per_s": mean["sequences"] / mean["total"],
        "generated_tokens_per_s": mean["tokens"] / mean["total"],
        "peak_rss_mb": peak_rss_mb(),
        **work,
    }


def w1_work(trainer: PPOTrainer, mean: dict[str, float]) -> dict[str, float]:
    """FLOPs (and, for sampling, weight bytes read) of each phase of one W1 step, from the
    model's parameter counts and the step's mean token counts (``benchmarks/w1_pairs.py``
    sets them against the machine's measured matmul throughput and memory bandwidth).

    sample: every decode step reads every weight once (batch B, T new tokens: T reads) and
    does 2 FLOPs per weight per row; score: one forward of the reference (2 per weight per
    token); update: ``update_flops_per_sequence`` per sequence. Attention over <= 50 tokens,
    norms and the sampling softmax are left out (under 2% of the FLOPs here)."""
    counts = parameter_counts(trainer)
    config = trainer.policy.module.lm.config
    batch = mean["sequences"]
    new_tokens = round(mean["response_tokens"])
    query, response = round(mean["query_tokens"]), new_tokens
    weights = counts.body + counts.head
    return {
        "sample_flop": 2 * weights * batch * new_tokens,
        "sample_bytes": new_tokens * weights * 4,  # float32
        "score_flop": batch * (2 * counts.body * (query + response) + 2 * counts.head * response),
        "update_flop": batch
        * update_flops_per_sequence(
            counts, config.num_hidden_layers, config.hidden_size, query, response
        ),
    }


def print_w1(timed_steps: int, engine: str, workload: str) -> None:
    figures = run_w1(timed_steps, engine, W1G_OVERRIDES if workload == "W1G" else None)
    print(
        f"workload {workload}: rewardtune (engine {engine}), SmolLM2-135M float32 CPU "
        f"x{torch.get_num_threads()} threads"
    )
    for key, value in figures.items():
        print(f"  {key:24s} {value:10.3f}")
    print(json.dumps(figures))


# --- W2: the model, the config, the FLOPs ----------------------------------------------


@dataclass(frozen=True)
class W2Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    batch: int
    mini_batch: int
    prompt_tokens: int
    new_tokens: int
    dtype: str
    vocab: int = 32000


W2_FULL = W2Shape(2048, 5632, 22, 32, 4, 64, 16, 64, 128, "bfloat16")  # TinyLlama-1.1B's config
W2_SMOKE = W2Shape(256, 688, 2, 4, 2, 8, 4, 16, 16, "float32")


def w2_tokenizer():
    """A byte-level BPE trained in milliseconds; <unk> <s> </s> are ids 0, 1, 2 as TinyLlama's.

    It knows a few hundred ids: the model's vocabulary stays 32000 and prompts are drawn
    from it directly (ids the tokenizer lacks decode to nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 10, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def build_w2_model(folder: Path, shape: W2Shape, device: str) -> Path:
    """TinyLlama-1.1B-Chat-v1.0's LlamaConfig (or the smoke shape), random weights, saved."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        hidden_act="silu",
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.1B weights is quick on the GPU
        model = LlamaForCausalLM(config).to(getattr(torch, shape.dtype))
    model.save_pretrained(folder)
    w2_tokenizer().save_pretrained(folder)
    del model
    return folder


def w2_config(
    model_dir: Path, folder: Path, shape: W2Shape, engine: str, extra: dict | None = None
):
    """The W2 recipe with ``generation.engine`` set to ``engine`` (and ``extra`` overrides)."""
    prompts = folder / "w2_prompts.txt"
    prompts.write_text("the quick brown fox\njumps over the lazy dog\n")
    reward_file = folder / "w2_reward.py"  # a recipe needs one; the loop scores token ids itself
    reward_file.write_text(
        "def length(responses):\n    return [float(len(r)) for r in responses]\n"
    )
    overrides = {
        "model.name": str(model_dir),
        "model.dtype": shape.dtype,
        "model.lora": {"r": 16, "alpha": 16, "dropout": 0.05},
        "reward": [{"type": "python", "function": f"{reward_file}:length", "input": "response"}],
        "data.source": str(prompts),
        "data.eval_fraction": 0.0,
        "generation.max_new_tokens": shape.new_tokens,
        "generation.min_new_tokens": shape.new_tokens,
        "generation.top_k": 0,
        "generation.top_p": 1.0,
        "ppo.batch_size": shape.batch,
        "ppo.mini_batch_size": shape.mini_batch,
        "ppo.ppo_epochs": 1,
        "ppo.advantage": "gae",  # classic PPO with a value head (the recipe it borrows: rloo)
        "ppo.samples_per_prompt": 1,
        "eval.enabled": False,
        "generation.engine": engine,
        **(extra or {}),
    }
    return recipe_config(overrides)


def w2_prompts(shape: W2Shape, step: int) -> list[torch.Tensor]:
    """``batch`` prompts of exactly ``prompt_tokens`` ids, uniform over the vocab minus the
    three specials; the same for every engine at the same step."""
    generator = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(3, shape.vocab, (shape.batch, shape.prompt_tokens), generator=generator)
    return list(ids)


def low_id_fraction(responses: list[torch.Tensor], vocab: int) -> list[float]:
    """The reward: the fraction of response tokens whose id is in the lower half of the vocab."""
    return [float((r < vocab // 2).float().mean()) for r in responses]


def w2_steps(trainer: PPOTrainer, shape: W2Shape, timed_steps: int) -> list[dict[str, float]]:
    """One warm-up step and ``timed_steps`` timed ones of the classic loop on W2's prompts,
    rewarded by ``low_id_fraction``."""
    return [
        timed_step(trainer, w2_prompts(shape, step), lambda r, _: low_id_fraction(r, shape.vocab))
        for step in range(timed_steps + 1)
    ]


@dataclass(frozen=True)
class ParameterCounts:
    body: int  # frozen matmul (and norm) weights, no embedding, no LM head
    head: int  # the LM head
    trainable: int  # LoRA + value head


def parameter_counts(trainer: PPOTrainer) -> ParameterCounts:
    module = trainer.policy.module
    lm = module.lm.get_base_model() if hasattr(module.lm, "get_base_model") else module.lm
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    embed_weight = lm.get_input_embeddings().weight
    head_weight = lm.get_output_embeddings().weight
    head = head_weight.numel()
    tied = embed_weight.data_ptr() == head_weight.data_ptr()  # SmolLM2: one tensor, counted once
    embed = 0 if tied else embed_weight.numel()
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return ParameterCounts(body=frozen - embed - head, head=head, trainable=trainable)


def update_flops_per_sequence(
    counts: ParameterCounts, layers: int, hidden: int, query_tokens: int, response_tokens: int
) -> float:
    """FLOPs of one forward + backward of one (query, response) in the update (module docstring)."""
    s, r = query_tokens + response_tokens, response_tokens
    dense = 4 * counts.body * s
    head = 4 * counts.head * (r + 1)
    attention = 6 * layers * hidden * s * (s + 1)
    trainable = 6 * counts.trainable * s
    return dense + head + attention + trainable


def w2_update_flops(trainer: PPOTrainer, shape: W2Shape, mean: dict[str, float]) -> float:
    """FLOPs of one PPO epoch of W2's update, from the mean token counts of ``timed_step``."""
    return mean["sequences"] * update_flops_per_sequence(
        parameter_counts(trainer),
        shape.layers,
        shape.hidden,
        round(mean["query_tokens"]),
        round(mean["response_tokens"]),
    )


def peak_flops(override_tflops: float | None) -> float | None:
    """The device's peak dense bf16 FLOP/s: ``--peak-tflops``, or known by the GPU's name."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


# --- W2: one engine, then both ---------------------------------------------------------


class _Notes(logging.Handler):
    """Collects what rewardtune logs while an engine runs (e.g. why ``fast`` fell back to hf)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line not in self.lines:
            self.lines.append(line)


W2_ENGINES = {  # --engines: generation settings per name
    "hf": {"generation.engine": "hf"},
    "fast": {"generation.engine": "fast"},
    "fast-compiled": {"generation.engine": "fast", "generation.compile": True},
}


def device_bandwidth() -> float | None:
    """The GPU's memory bandwidth in bytes/s: the best of five 1 GiB device-to-device copies,
    counting the bytes read and written."""
    if not torch.cuda.is_available():
        return None
    source = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(6):  # the first warms up
        synchronize()
        start = time.perf_counter()
        target.copy_(source)
        synchronize()
        best = min(best, time.perf_counter() - start)
    del source, target
    return 2 * (1 << 30) / best


def sampling_bytes_per_step(trainer: PPOTrainer, shape: W2Shape) -> dict[str, float]:
    """The least a decode step must read: every weight but the input embedding (a lookup of
    ``batch`` rows), and the KV cache of the tokens so far (the mean context over the
    response: prompt + (new + 1) / 2 tokens), in the model's dtype."""
    lm = trainer.policy.module.lm
    embedding = lm.get_input_embeddings().weight
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    weights -= embedding.numel() * embedding.element_size()
    head_dim = shape.hidden // shape.heads
    context = shape.prompt_tokens + (shape.new_tokens + 1) / 2
    kv = shape.layers * 2 * shape.batch * shape.kv_heads * head_dim * context
    return {"weights": weights, "kv_cache": kv * embedding.element_size()}


def run_w2_engine(
    model_dir: Path, folder: Path, shape: W2Shape, engine: str, timed_steps: int
) -> dict:
    """A fresh trainer on ``engine`` (a ``W2_ENGINES`` name): one warm-up step, then
    ``timed_steps`` timed steps."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # what an earlier engine left allocated (0 when all was freed) is inside this one's peak
    memory_before = torch.cuda.memory_allocated() / 1e9 if torch.cuda.is_available() else None
    notes = _Notes()
    logger = logging.getLogger("rewardtune")
    level = logger.level
    logger.addHandler(notes)
    logger.setLevel(logging.INFO)
    try:
        extra = W2_ENGINES[engine]
        trainer = PPOTrainer(w2_config(model_dir, folder, shape, extra["generation.engine"], extra))
        rows = w2_steps(trainer, shape, timed_steps)
    finally:
        logger.removeHandler(notes)
        logger.setLevel(level)
    mean = mean_rows(rows[1:])  # the first step is the warm-up
    flops = w2_update_flops(trainer, shape, mean)
    read = sampling_bytes_per_step(trainer, shape)
    figures = {
        "sampling_weight_gb_per_step": read["weights"] / 1e9,
        "sampling_kv_gb_per_step": read["kv_cache"] / 1e9,
        "sampling_s_per_decode_step": mean["generate"] / shape.new_tokens,
        "rollout_tokens_per_s": mean["tokens"] / mean["rollout"],
        "sampling_tokens_per_s": mean["tokens"] / mean["generate"],
        "update_tokens_per_s": mean["update_tokens"] / mean["update"],
        "samples_per_s": shape.batch / mean["total"],
        "seconds_per_step": mean["total"],
        "rollout_s": mean["rollout"],
        "generate_s": mean["generate"],
        "update_s": mean["update"],
        "update_tflop": flops * trainer.ppo.ppo_epochs / 1e12,
        "update_tflops_per_s": flops * trainer.ppo.ppo_epochs / mean["update"] / 1e12,
        "response_tokens": mean["response_tokens"],
        "peak_gpu_memory_gb": (
            torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
        ),
        "gpu_memory_before_gb": memory_before,
        "peak_rss_mb": peak_rss_mb(),
        "notes": notes.lines,
    }
    del trainer
    return figures


def run_w2(shape: W2Shape, timed_steps: int, device: str, engines: list[str]) -> dict[str, dict]:
    """Each engine in this process, on the same saved model and the same prompts."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = build_w2_model(folder / "tinyllama-1.1b-random", shape, device)
        return {
            engine: run_w2_engine(model_dir, folder, shape, engine, timed_steps)
            for engine in engines
        }


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value >= target else "MISS"


def percent(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


def print_w2(results: dict[str, dict], shape: W2Shape, peak: float | None, smoke: bool) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke)"
    print(
        f"workload W2{' --cpu-smoke' if smoke else ''}: rewardtune, {shape.layers} layers x "
        f"{shape.hidden} ({shape.dtype}), batch {shape.batch}, {shape.prompt_tokens} prompt + "
        f"{shape.new_tokens} new tokens, on {device}"
    )
    for engine, figures in results.items():
        figures["update_mfu"] = figures["update_tflops_per_s"] * 1e12 / peak if peak else None
        print(f"  engine {engine}")
        for key, value in figures.items():
            if key == "notes":
                print("".join(f"    note: {line}\n" for line in value), end="")
            elif key == "update_mfu":
                print(f"    {key:24s} {percent(value):>12s}")
            elif value is not None:
                print(f"    {key:24s} {value:12.3f}")
    if "hf" in results and "fast" in results:
        hf, fast = results["hf"], results["fast"]
        speedup = fast["rollout_tokens_per_s"] / hf["rollout_tokens_per_s"]
        print(
            f"  fast/hf rollout tokens/s: {speedup:.2f}x (target >= "
            f"{TARGET_ROLLOUT_SPEEDUP:.0f}x): {verdict(speedup, TARGET_ROLLOUT_SPEEDUP)}"
        )
        sampling = fast["sampling_tokens_per_s"] / hf["sampling_tokens_per_s"]
        print(f"  fast/hf sampling tokens/s (generate() alone, no reference pass): {sampling:.2f}x")
    bandwidth = device_bandwidth()
    if bandwidth:
        print(
            f"  memory bandwidth (1 GiB device copies, read + write): {bandwidth / 1e12:.2f} TB/s"
        )
        for engine, figures in results.items():
            read = figures["sampling_weight_gb_per_step"] + figures["sampling_kv_gb_per_step"]
            limit = shape.batch / (read * 1e9 / bandwidth)
            share = figures["sampling_tokens_per_s"] / limit
            figures["sampling_bandwidth_share"] = share
            print(
                f"  sampling, engine {engine}: {figures['sampling_tokens_per_s']:,.0f} tokens/s "
                f"= {percent(share)} of the bandwidth limit {limit:,.0f} tokens/s ({read:.2f} GB "
                f"a decode step; target >= {percent(TARGET_SAMPLING_SHARE)}): "
                f"{verdict(share, TARGET_SAMPLING_SHARE)}"
            )
    of_peak = f"of {peak / 1e12:.1f} TFLOP/s" if peak else "(peak FLOP/s unknown: --peak-tflops)"
    for engine, figures in results.items():
        mfu = figures["update_mfu"]
        print(
            f"  update MFU, engine {engine}: {percent(mfu)} {of_peak} "
            f"(target >= {percent(TARGET_UPDATE_MFU)}): {verdict(mfu, TARGET_UPDATE_MFU)}"
        )
    print(json.dumps({"workload": "W2", "smoke": smoke, "device": device, "engines": results}))


def main() -> None:
    enable_cpu_fast_paths()  # as the rewardtune command does: the timings measure what it runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W1", choices=["W1", "W1G", "W2"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument(
        "--engine", default="fast", choices=["hf", "fast"], help="W1, W1G: generation.engine"
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["hf", "fast"],
        choices=list(W2_ENGINES),
        help="W2: the engines to run, in order (fast-compiled: fast with generation.compile)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="W2: the device's peak dense bf16 TFLOP/s"
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="W2: run on CPU at a tiny size (float32) to check the script, not to measure",
    )
    args = parser.parse_args()
    quiet_libraries()
    if args.workload in ("W1", "W1G"):
        print_w1(args.steps, args.engine, args.workload)
        return
    if not torch.cuda.is_available() and not args.cpu_smoke:
        sys.exit("W2 needs a CUDA GPU and this machine has none (--cpu-smoke runs it tiny on CPU)")
    shape = W2_SMOKE if args.cpu_smoke else W2_FULL
    device = "cpu" if args.cpu_smoke else "cuda"
    results = run_w2(shape, args.steps, device, args.engines)
    print_w2(results, shape, peak_flops(args.peak_tflops), args.cpu_smoke)


if __name__ == "__main__":
    main()

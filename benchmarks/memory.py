"""Peak memory of one PPO step against batch size and response length, with and without
``model.gradient_checkpointing`` and ``model.logprob_chunk``.

Each configuration runs in a fresh process (a process's peak never goes down, and freed
memory stays with glibc): it loads the policy and its reference, resets the peak, then runs
one ``PPOTrainer.step()`` on random prompts and responses of exactly the given lengths, which
is the scoring pass, the reference pass and the update (``ppo_epochs`` passes over
minibatches, AdamW). Sampling is left out: its logits are (batch, vocab) per token, and
neither switch changes it.

Printed per configuration: the peak during the step (CPU: the resident set's high-water mark,
VmHWM, reset through /proc/self/clear_refs after loading; GPU: ``max_memory_allocated``
after ``reset_peak_memory_stats``), and the same minus what was resident once the model was
loaded (the step's own memory). Memory, unlike time, is meaningful on a loaded machine.

    python benchmarks/memory.py                                  # W1: SmolLM2-135M, LoRA r 16
    python benchmarks/memory.py --model gpt2-size --full         # GPT-2 124M, full fine-tuning
    python benchmarks/memory.py --batch 16 64 --tokens 32 128 --chunk 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OPTIONS = {  # name -> the model.* overrides
    "plain": {},
    "checkpointing": {"model.gradient_checkpointing": True},
    "chunked": {"model.logprob_chunk": None},  # the chunk comes from --chunk
    "both": {"model.gradient_checkpointing": True, "model.logprob_chunk": None},
}


def gpt2_size(folder: Path) -> Path:
    """A randomly initialised GPT-2 of the real size (124M, vocab 50257) with the tests'
    small tokenizer (prompts and responses here are random ids anyway)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from transformers import GPT2Config, GPT2LMHeadModel

    from conftest import policy_tokenizer

    tokenizer = policy_tokenizer()
    config = GPT2Config(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def child(spec: dict) -> dict:
    """One configuration, in this (fresh) process: the step's peak memory in MiB."""
    import torch

    from rewardtune import PPOTrainer, load_config
    from rewardtune.models import enable_cpu_fast_paths

    enable_cpu_fast_paths()  # as the rewardtune command does (malloc keeps freed memory)
    torch.set_num_threads(spec["threads"])
    overrides = [f"{k}={json.dumps(v) if v is not None else 'null'}" for k, v in spec["set"]]
    cfg = load_config(spec["recipe"], overrides)
    trainer = PPOTrainer(cfg)
    batch, prompt, tokens = spec["batch"], spec["prompt_tokens"], spec["tokens"]
    generator = torch.Generator().manual_seed(0)
    high = min(len(trainer.tokenizer), trainer.policy.module.lm.config.vocab_size)
    eos = set(trainer.eos_ids)
    ids = [i for i in range(3, high) if i not in eos]  # responses run to their full length
    pick = torch.tensor(ids)
    queries = [pick[torch.randint(len(ids), (prompt,), generator=generator)] for _ in range(batch)]
    responses = [
        pick[torch.randint(len(ids), (tokens,), generator=generator)] for _ in range(batch)
    ]
    scores = torch.rand(batch, generator=generator).tolist()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        loaded = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        loaded = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    trainer.step(queries, responses, scores)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status("VmHWM")
    mib = 2**20
    return {"peak_mib": peak / mib, "step_mib": (peak - loaded) / mib}


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_one(spec: dict) -> dict:
    env = os.environ | {"OMP_NUM_THREADS": str(spec["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="or gpt2-size")
    parser.add_argument("--full", action="store_true", help="full fine-tuning (default: LoRA)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--mini-batch", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=8, help="model.logprob_chunk")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = str(gpt2_size(folder / "gpt2")) if args.model == "gpt2-size" else args.model
        recipe = folder / "memory.yaml"
        recipe.write_text("reward:\n  - type: vader\neval:\n  enabled: false\n")
        print(
            f"model {args.model}, {'full fine-tuning' if args.full else 'LoRA r 16'}, "
            f"prompts of {args.prompt_tokens} tokens, mini-batch {args.mini_batch}, "
            f"1 PPO epoch, logprob_chunk {args.chunk}; MiB"
        )
        print(f"{'batch':>5} {'tokens':>6} {'option':<14} {'peak':>8} {'step':>8}")
        for batch in args.batch:
            for tokens in args.tokens:
                for option in args.options:
                    extra = {
                        k: (args.chunk if k == "model.logprob_chunk" else v)
                        for k, v in OPTIONS[option].items()
                    }
                    base = {
                        "model.name": model,
                        "model.dtype": "float32",
                        "ppo.batch_size": batch,
                        "ppo.mini_batch_size": min(args.mini_batch, batch),
                        "ppo.ppo_epochs": 1,
                        "generation.max_new_tokens": tokens,
                    }
                    if args.full:
                        base["model.lora"] = None
                    spec = {
                        "recipe": str(recipe),
                        "set": list((base | extra).items()),
                        "batch": batch,
                        "tokens": tokens,
                        "prompt_tokens": args.prompt_tokens,
                        "threads": args.threads,
                    }
                    out = run_one(spec)
                    print(
                        f"{batch:>5} {tokens:>6} {option:<14} "
                        f"{out['peak_mib']:>8.0f} {out['step_mib']:>8.0f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()

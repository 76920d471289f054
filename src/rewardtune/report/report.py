"""A run's report: one self-contained ``report.html`` and the same content as ``report.md``.

The report is the list of blocks (see ``blocks.py``) that the sections below build from the
run directory; each block renders itself to HTML and to Markdown, so the two files always
say the same thing.

Every optional input (metrics, samples, run info, evaluation) may be missing; its section
then says so instead of failing.
"""

from __future__ import annotations

from pathlib import Path

from rewardtune.core.surrogate import resolve_aggregation
from rewardtune.report.blocks import (
    Block,
    Cell,
    Facts,
    Heading,
    Para,
    Plot,
    Table,
    write_pages,
)
from rewardtune.report.eval_tables import (
    diversity_kl_blocks,
    eval_settings,
    metrics_table,
    samples_table,
    section_blocks,
    toxicity_blocks,
)
from rewardtune.report.figures import eval_history_figure, histogram_figure, training_figure
from rewardtune.report.formatting import (
    duration,
    human_count,
    is_number,
    mapping,
    num,
    share,
    sort_key,
)
from rewardtune.report.run_data import RunData, load_run, reward_text

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
TRAINING_SAMPLES_SHOWN = 8

ESTIMATOR_PAPERS = {
    "gae": "GAE with a value head (Schulman et al. 2016)",
    "rloo": "RLOO, leave-one-out baseline (Ahmadian et al. 2024)",
    "grpo": "GRPO, group-normalised (Shao et al. 2024)",
    "dr_grpo": "Dr. GRPO, group mean only (Liu et al. 2025)",
    "reinforce_pp": "REINFORCE++, batch-whitened returns (Hu 2025)",
}


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into a run directory.

    Reads config.yaml and whichever of metrics.jsonl, samples.jsonl, run_info.json,
    eval.json and eval.jsonl exist; returns the two paths.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    title = f"rewardtune report: {run.config.get('recipe', run_dir.name)}"
    subtitle = f"Run directory {run_dir.resolve().name}"
    blocks = report_blocks(run)
    return write_pages(run_dir / REPORT_HTML, run_dir / REPORT_MD, title, subtitle, blocks)


def report_blocks(run: RunData) -> list[Block]:
    return [
        *summary_section(run),
        *training_section(run),
        *training_samples_section(run),
        *evaluation_section(run),
        *side_by_side_section(run),
    ]


# --- run summary ---------------------------------------------------------------------


def summary_section(run: RunData) -> list[Block]:
    cfg, info = run.config, run.run_info or {}
    model, ppo = cfg.get("model") or {}, cfg.get("ppo") or {}
    facts = [
        ("Recipe", str(cfg.get("recipe", "unknown"))),
        ("Model", str(info.get("model") or model.get("name", "unknown"))),
        ("LoRA", _lora_text(model.get("lora"))),
        ("Reward", reward_text(cfg) or "none"),
        ("Steps", f"{run.steps_done} done of {ppo.get('steps', '?')} configured"),
        ("PPO", _ppo_text(ppo)),
        ("Advantage", _advantage_text(ppo)),
        ("Policy loss", _loss_text(ppo)),
        ("Wall time", duration(info.get("wall_time_s"))),
        *_parameter_facts(run.run_info, model.get("lora")),
    ]
    return [Heading("Run summary"), Facts(facts)]


def _lora_text(lora: object) -> str:
    return mapping(lora) if isinstance(lora, dict) else "none (full fine-tune)"


def _parameter_facts(run_info: dict | None, lora: object) -> list[tuple[str, str]]:
    params = (run_info or {}).get("parameters")
    if not params:
        return [("Trainable parameters", "unknown (no run_info.json)")]
    total = params.get("total")

    def of_total(n: object) -> str:
        if not (is_number(n) and is_number(total) and total):
            return human_count(n)
        return f"{human_count(n)} ({share(n, total)} of {human_count(total)} total)"

    lm_name = "LoRA adapter" if isinstance(lora, dict) else "language model"
    trainable = sum(v for k, v in params.items() if k != "total" and is_number(v))
    return [
        (f"Trainable: {lm_name}", of_total(params.get("trainable_lm"))),
        ("Trainable: value head", of_total(params.get("value_head"))),
        ("Trainable: all", of_total(trainable)),
    ]


def _ppo_text(ppo: dict) -> str:
    return (
        f"batch {ppo.get('batch_size', '?')}, learning rate {ppo.get('learning_rate', '?')}, "
        f"initial KL coef {ppo.get('init_kl_coef', '?')}"
    )


def _advantage_text(ppo: dict) -> str:
    name = ppo.get("advantage", "gae")
    if name == "grpo" and ppo.get("grpo_scale") is False:
        name = "dr_grpo"
    k = ppo.get("samples_per_prompt", 1)
    kl = "in the loss (k3)" if ppo.get("kl_in") == "loss" else "in the reward"
    return f"{ESTIMATOR_PAPERS.get(name, name)}; {k} sample(s) per prompt; KL {kl}"


def _loss_text(ppo: dict) -> str:
    """The ratio, its clip range, the aggregation and the DAPO options the run used
    (docs/config.md, "Loss options")."""
    ratio, clip = ppo.get("importance_ratio", "token"), ppo.get("cliprange", 0.2)
    if ratio == "sequence":
        low, high = ppo.get("sequence_cliprange") or (3e-4, 4e-4)
        parts = [f"GSPO sequence ratio (Zheng et al. 2025), clipped to [1 - {low}, 1 + {high}]"]
    else:
        low, high = ppo.get("cliprange_low") or clip, ppo.get("cliprange_high") or clip
        name = "token ratio" if ratio == "token" else "response ratio, as TRL's RLOO"
        dapo = " (clip-higher, Yu et al. 2025)" if high > low else ""
        parts = [f"{name}, clipped to [1 - {low}, 1 + {high}]{dapo}"]
    aggregation = resolve_aggregation(
        ppo.get("loss_aggregation"),
        ppo.get("advantage", "gae"),
        ppo.get("grpo_scale", True),
        ratio,
    )
    if aggregation == "seq_mean_token_sum_norm":
        aggregation += " (Dr. GRPO's constant normaliser)"
    parts.append(aggregation)
    if ppo.get("mask_truncated"):
        parts.append("truncated responses masked (DAPO)")
    if ppo.get("filter_groups"):
        rounds = ppo.get("max_resample_rounds", "?")
        parts.append(f"dynamic sampling, up to {rounds} extra draws a step (DAPO)")
    return "; ".join(parts)


# --- training ------------------------------------------------------------------------


def training_section(run: RunData) -> list[Block]:
    blocks: list[Block] = [Heading("Training curves")]
    png = training_figure(run.metrics) if run.metrics else None
    if png is None:
        missing = "No training metrics yet (metrics.jsonl is missing or empty)."
        return [*blocks, Para(missing, note=True)]
    blocks.append(Plot(png, f"Training curves over {len(run.metrics)} PPO steps"))
    history = eval_history_figure(run.eval_history) if run.eval_history else None
    if history is not None:
        every = (run.config.get("eval") or {}).get("every")
        caption = f"Held-out evaluation during training (every {every} steps, eval_history.jsonl)"
        blocks.append(Plot(history, caption))
    return blocks


def training_samples_section(run: RunData) -> list[Block]:
    if not run.samples:
        return []
    shown = run.samples[-TRAINING_SAMPLES_SHOWN:]
    rows = [
        [
            Cell(str(s.get("step", "")), sort=sort_key(s.get("step"))),
            Cell(str(s.get("prompt", "")), "text"),
            Cell(str(s.get("response", "")), "text"),
            Cell(num(s.get("reward")), sort=sort_key(s.get("reward"))),
        ]
        for s in shown
    ]
    table = Table(["step", "prompt", "response", "reward"], rows, numeric={0, 3})
    return [Heading("Last training samples"), Para(f"The last {len(shown)} logged samples."), table]


# --- evaluation ----------------------------------------------------------------------


def evaluation_section(run: RunData) -> list[Block]:
    blocks: list[Block] = [Heading("Before / after evaluation")]
    summary = run.eval_summary
    if summary is None:
        missing = (
            "Not evaluated yet: this run has no eval.json. "
            "Run `rewardtune evaluate RUN_DIR`, then `rewardtune report RUN_DIR`."
        )
        return [*blocks, Para(missing, note=True)]
    blocks.append(Para(eval_settings(summary)))
    png = histogram_figure(run.eval_rows) if run.eval_rows else None
    if png is not None:
        blocks.append(Plot(png, "Before/after distributions on held-out prompts"))
    return [
        *blocks,
        metrics_table(summary),
        *toxicity_blocks(summary.toxicity),
        *diversity_kl_blocks(summary),
        *section_blocks(summary),
    ]


def side_by_side_section(run: RunData) -> list[Block]:
    blocks: list[Block] = [Heading("Side by side")]
    if not run.eval_rows:
        missing = "No per-prompt evaluation rows yet (eval.jsonl is missing)."
        return [*blocks, Para(missing, note=True)]
    intro = (
        "Responses before and after training, largest reward gain first. "
        "Type to filter; click a column header to sort."
    )
    return [*blocks, Para(intro), samples_table(run.eval_rows)]

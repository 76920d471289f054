"""A Hub model card (``README.md``) for ``final/`` and for ``merge`` outputs.

Built with huggingface_hub's ``ModelCard``/``ModelCardData`` from a Jinja template
(``assets/model_card.md``): YAML front matter the Hub reads (base model, library, tags, license,
data sets), then what was trained, the before/after table when the run was evaluated, a few
side-by-side samples, a loading snippet that runs, and the resolved config.
"""

from __future__ import annotations

import json
from importlib import metadata, resources
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError

from rewardtune.data.prompts import LOCAL_SUFFIXES, shipped_prompt_sets
from rewardtune.report.blocks import Facts, Para, Table
from rewardtune.report.eval_tables import eval_settings, metrics_table, samples_table
from rewardtune.report.formatting import mapping
from rewardtune.report.run_data import RunData, load_run, reward_text
from rewardtune.runs.checkpoints import MODEL_INFO
from rewardtune.runs.rundir import CONFIG, FINAL

CARD = "README.md"
SAMPLES_SHOWN = 3
# aliases of model.name -> (hub id, license) of the model they stand for
ALIAS_BASES = {"smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}


def run_root(path: Path) -> Path | None:
    """The run directory of a run directory or of its ``final/`` (None for anything else,
    e.g. a checkpoint: a card describes ``final/``)."""
    path = Path(path)
    if path.name == FINAL and (path.parent / CONFIG).is_file():
        return path.parent
    return path if (path / CONFIG).is_file() else None


def write_model_card(run_dir: Path, folder: Path | None = None, merged: bool = False) -> Path:
    """Write ``README.md`` into ``folder`` (default: the run's ``final/``); returns its path.

    ``merged``: the folder holds the adapter merged into the base (a plain transformers model).
    """
    run_dir = run_root(run_dir) or Path(run_dir)
    folder = Path(folder) if folder is not None else run_dir / FINAL
    run = load_run(run_dir)
    info = json.loads((run_dir / FINAL / MODEL_INFO).read_text())
    adapter = bool(info.get("adapter")) and not merged
    template = (resources.files("rewardtune.report") / "assets" / "model_card.md").read_text()
    card = ModelCard.from_template(
        card_data(run.config, info, adapter),
        template_str=template,
        title=f"{run.config.get('recipe', run_dir.name)}: {base_label(info)} tuned with PPO",
        intro=_intro(info, adapter, merged),
        training=Facts(training_facts(run)).markdown(),
        evaluation=_evaluation(run),
        samples=_samples(run),
        usage=_usage(info, adapter),
        code=load_snippet(info, folder, adapter),
        folder=str(folder),
        version=_version(),
        config=yaml.safe_dump(run.config, sort_keys=False),
    )
    path = folder / CARD
    card.save(path)
    return path


def card_data(config: dict, info: dict, adapter: bool) -> ModelCardData:
    """The front matter: base_model, library_name, tags, license, datasets, pipeline_tag."""
    base_id, license_ = base_model_id(info["base"]), base_license(info["base"])
    source = (config.get("data") or {}).get("source")
    tags = ["rewardtune", "ppo", "rlhf", *(["lora"] if adapter else [])]
    return ModelCardData(
        base_model=base_id,
        library_name="peft" if adapter else "transformers",
        tags=tags + sorted({f"reward-{t.get('type')}" for t in config.get("reward") or []}),
        license=license_,
        datasets=[source] if source and is_hub_dataset(source) else None,
        pipeline_tag="text2text-generation" if info.get("seq2seq") else "text-generation",
    )


def base_model_id(name: str) -> str | None:
    """The hub id of ``model.name``: an alias's model, a hub id itself, None for local files."""
    if name in ALIAS_BASES:
        return ALIAS_BASES[name][0]
    return None if Path(name).expanduser().exists() else name


def base_license(name: str) -> str | None:
    """The base's license from its own model card (a local folder's, or one the hub cache
    holds); None when unknown (no network is used)."""
    if name in ALIAS_BASES:
        return ALIAS_BASES[name][1]
    local = Path(name).expanduser()
    if local.exists():
        cached = local / CARD
    else:
        try:
            cached = try_to_load_from_cache(name, CARD)
        except HFValidationError:  # not a valid hub id: nothing cached under it
            return None
    if not isinstance(cached, str | Path) or not Path(cached).is_file():
        return None
    return ModelCard.load(cached).data.to_dict().get("license")


def base_label(info: dict) -> str:
    """The base as people know it: an alias's hub id and the file it loaded, else its name."""
    name = info["base"]
    if name in ALIAS_BASES:
        return f"{ALIAS_BASES[name][0]} ({info.get('gguf_file') or name})"
    return name


def is_hub_dataset(source: str) -> bool:
    return source not in shipped_prompt_sets() and Path(source).suffix not in LOCAL_SUFFIXES


def training_facts(run: RunData) -> list[tuple[str, str]]:
    cfg = run.config
    model, ppo = cfg.get("model") or {}, cfg.get("ppo") or {}
    lora = model.get("lora")
    kl = (
        f"init_kl_coef {ppo.get('init_kl_coef')}, adaptive {ppo.get('adaptive_kl')} "
        f"(target {ppo.get('target_kl')}, horizon {ppo.get('horizon')}), "
        f"estimator {ppo.get('kl_estimator')}"
    )
    return [
        ("Recipe", str(cfg.get("recipe", "unknown"))),
        ("Base model (model.name)", str(model.get("name"))),
        ("Method", f"LoRA ({mapping(lora)})" if isinstance(lora, dict) else "full fine-tune"),
        ("Reward", reward_text(cfg) or "none"),
        ("Prompts", str((cfg.get("data") or {}).get("source"))),
        ("Steps", f"{run.steps_done} of {ppo.get('steps')}"),
        ("KL penalty", kl),
        (
            "Optimiser",
            f"AdamW, learning rate {ppo.get('learning_rate')}, batch {ppo.get('batch_size')}",
        ),
    ]


def _intro(info: dict, adapter: bool, merged: bool) -> str:
    if adapter:
        what = "a LoRA adapter"
    elif merged and info.get("adapter"):
        what = "a LoRA adapter merged into the base weights"
    else:
        what = "a fully fine-tuned version"
    return (
        f"This is {what} of `{base_label(info)}`, trained by rewardtune with PPO toward the reward "
        "below, with a KL penalty that keeps it close to the base."
    )


def _evaluation(run: RunData) -> str:
    summary = run.eval_summary
    if not summary or (summary.checkpoint or FINAL) != FINAL:
        return Para("Not evaluated yet: run `rewardtune evaluate RUN_DIR`.", note=True).markdown()
    settings = Para(eval_settings(summary)).markdown()
    return f"{settings}\n\n{metrics_table(summary).markdown()}"


def _samples(run: RunData) -> str:
    if not run.eval_rows or not run.eval_summary:
        return Para("No evaluation samples yet.", note=True).markdown()
    table = samples_table(run.eval_rows)
    shown = Table(table.columns, table.rows[:SAMPLES_SHOWN], numeric=table.numeric)
    intro = Para(f"The {len(shown.rows)} held-out prompts whose reward rose most.").markdown()
    return f"{intro}\n\n{shown.markdown()}"


def _usage(info: dict, adapter: bool) -> str:
    if adapter:
        return "Load the base model, then the adapter with peft:"
    return "A plain transformers model (no peft needed):"


def load_snippet(info: dict, folder: Path, adapter: bool) -> str:
    """Python that loads this folder and generates (it runs as written)."""
    auto = "AutoModelForSeq2SeqLM" if info.get("seq2seq") else "AutoModelForCausalLM"
    gguf = f", gguf_file={info['gguf_file']!r}" if info.get("gguf_file") else ""
    lines = [f"from transformers import AutoTokenizer, {auto}", ""]
    if adapter:
        lines[0:0] = ["from peft import PeftModel"]
        lines += [
            f"base = {auto}.from_pretrained({info['source']!r}{gguf})",
            f"model = PeftModel.from_pretrained(base, {str(folder)!r})",
        ]
    else:
        lines += [f"model = {auto}.from_pretrained({str(folder)!r})"]
    lines += [
        f"tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})",
        'inputs = tokenizer("My neighbour is", return_tensors="pt")',
        "output = model.generate(**inputs, max_new_tokens=24, do_sample=True)",
        "print(tokenizer.decode(output[0], skip_special_tokens=True))",
    ]
    return "\n".join(lines)


def _version() -> str:
    try:
        return metadata.version("rewardtune")
    except metadata.PackageNotFoundError:
        return "unknown"

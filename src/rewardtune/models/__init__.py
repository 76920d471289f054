"""Models: loading (transformers / peft / bitsandbytes / GGUF, in ``hub``), the policy with its
value head and reference (``policy``), and the weights that train (``weights``)."""

from rewardtune.models.cpu_memory import enable_cpu_fast_paths
from rewardtune.models.policy import Policy, PolicyWithValueHead, count_parameters, load_policy
from rewardtune.models.weights import trainable_state_dict

__all__ = [
    "Policy",
    "PolicyWithValueHead",
    "count_parameters",
    "enable_cpu_fast_paths",
    "load_policy",
    "trainable_state_dict",
]

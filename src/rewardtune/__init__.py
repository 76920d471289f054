"""rewardtune: RLHF with PPO on Hugging Face language models.

Train toward a reward, stay close to the reference with a KL penalty, measure what changed.

Example (the offline default recipe, shortened; runs on a CPU)::

    from rewardtune import PPOTrainer, load_config

    config = load_config("smollm2-detox", ["ppo.steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=2"])
    trainer = PPOTrainer(config)
    history = trainer.train()          # or the classic loop below
    print(history[-1]["env/reward_mean"])

The classic loop of TRL's old ``PPOTrainer`` ports by changing imports::

    for batch in trainer.dataloader:
        responses = trainer.generate(batch["input_ids"])
        scores = reward(batch["query"], trainer.decode(responses))
        stats = trainer.step(batch["input_ids"], responses, scores)
        trainer.log_stats(stats, batch, scores)

``trainer.sample()`` returns the ``Generation`` record (responses with the sampling passes'
logprobs and values); passing it to ``step`` instead of the responses saves a forward pass.
``trainer.ppo_step`` returns the typed ``StepStats``; ``STAT.<field>`` is each stat's logged key.
"""

from rewardtune.config import Config, load_config
from rewardtune.rewards import Reward, Scores, build_reward
from rewardtune.sampling.rollout import Generation
from rewardtune.training.trainer import PPOTrainer
from rewardtune.types import STAT, RewardtuneError, StepStats

__all__ = [
    "STAT",
    "Config",
    "Generation",
    "PPOTrainer",
    "Reward",
    "RewardtuneError",
    "Scores",
    "StepStats",
    "build_reward",
    "load_config",
]
__version__ = "0.1.0"

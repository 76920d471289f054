"""`rewardtune` as the CLI runs it, plus each rank's trainable parameters written at the end.

    accelerate launch ... tests/helpers/dump_params.py OUT_DIR train RECIPE ...

writes OUT_DIR/params-rank{R}.safetensors when training ends (adapter + value head of that
rank's model), so a test can check that every process holds the same weights.
"""

import sys
from pathlib import Path

from safetensors.torch import save_file

from rewardtune.cli import main
from rewardtune.models import trainable_state_dict
from rewardtune.training.trainer import PPOTrainer

out_dir = Path(sys.argv.pop(1))
save_final = PPOTrainer.save_final


def save_final_and_dump(self):
    path = save_final(self)
    state = {f"lm.{k}": v for k, v in trainable_state_dict(self.policy).items()}
    state |= {f"v_head.{k}": v for k, v in self.policy.module.v_head.state_dict().items()}
    save_file(
        {k: v.detach().contiguous().clone() for k, v in state.items()},
        str(out_dir / f"params-rank{self.rank}.safetensors"),
    )
    return path


PPOTrainer.save_final = save_final_and_dump
main()

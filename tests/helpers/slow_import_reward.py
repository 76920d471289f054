"""A reward whose import takes a while, as a big reward model's load would: with
$RT_LOADING set, importing it writes that file, then sleeps $RT_LOADING_S seconds."""

import os
import time
from pathlib import Path

if "RT_LOADING" in os.environ:
    Path(os.environ["RT_LOADING"]).write_text("loading")
    time.sleep(float(os.environ.get("RT_LOADING_S", "30")))


def reward(prompts, responses):
    return [float(len(r)) for r in responses]

"""`python -m rewardtune` (and `accelerate launch -m rewardtune train ...`)."""

from rewardtune.cli import main

main()

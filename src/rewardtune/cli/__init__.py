"""The `rewardtune` command: train, evaluate, report, compare, generate, merge, recipes, config,
init.

Every user mistake ends as one line on stderr and exit code 2 (RewardtuneError).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import typer

from rewardtune.cli import commands
from rewardtune.cli.base import app, console
from rewardtune.cli.training import train
from rewardtune.distributed import rank_and_world
from rewardtune.models import enable_cpu_fast_paths
from rewardtune.types import RewardtuneError

__all__ = ["app", "main"]

for _command in (  # in the order --help lists them
    commands.recipes,
    commands.config,
    commands.init,
    train,
    commands.evaluate,
    commands.report,
    commands.compare,
    commands.generate,
    commands.merge,
):
    app.command()(_command)


def _print_error(text: str) -> None:
    """One line on stderr. Under several processes the same mistake usually stops every
    rank: rank 0 reports it and the launcher ends the others when it exits, so a later rank
    waits a moment and speaks only about a mistake that it alone ran into."""
    rank, _ = rank_and_world()
    if rank > 0:
        time.sleep(5)
        text = f"(rank {rank}) {text}"
    console.print(f"error: {text}", highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    enable_cpu_fast_paths()
    code = _run()
    if rank_and_world()[1] > 1:
        # one of several processes: the run has ended its trackers and left the process group
        # (distributed.end), but a gloo thread can still be alive, and destroying it at
        # interpreter exit aborts the process ("terminate called without an active
        # exception", exit 1 instead of this code). Everything is written: flush and leave.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _run() -> int:
    """The command's exit code: 0, 2 for a user mistake, 130 when interrupted."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
        return code if isinstance(code, int) else 0
    except RewardtuneError as err:
        _print_error(str(err))
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.BadParameter, typer.Abort) as err:
        console.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        return 130
    except Exception as err:
        # usage errors: typer vendors its own click, so match the interface, not the class
        if hasattr(err, "format_message") and getattr(err, "exit_code", None) == 2:
            console.print(
                f"error: {err.format_message()}", highlight=False, markup=False, soft_wrap=True
            )
            return 2
        raise

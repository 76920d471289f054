"""Python rewards for fault-injection tests (loaded by path from recipes)."""

import os
import signal
from pathlib import Path


def _count_call() -> int:
    """Counts calls across a process in the file $RT_COUNTER; returns this call's number."""
    path = os.environ["RT_COUNTER"]
    n = int(Path(path).read_text()) + 1 if os.path.exists(path) else 1
    Path(path).write_text(str(n))
    return n


def length_reward(prompts, responses):
    """Longer responses score more; kills its own process at call $RT_KILL_AT (kill -9)."""
    if "RT_COUNTER" in os.environ:
        n = _count_call()
        if n == int(os.environ.get("RT_KILL_AT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        if n == int(os.environ.get("RT_SLOW_AT", "0")):
            import time

            time.sleep(float(os.environ.get("RT_SLOW_S", "5")))
    return [len(r) / 10 for r in responses]


def nan_reward(prompts, responses):
    """NaN for the first response from call $RT_NAN_AT on."""
    n = _count_call()
    scores = [len(r) / 10 for r in responses]
    if n >= int(os.environ["RT_NAN_AT"]):
        scores[0] = float("nan")
    return scores


def string_reward(prompts, responses):
    return ["good" for _ in responses]


def short_reward(prompts, responses):
    return [1.0]


def raising_reward(prompts, responses):
    raise ConnectionError("reward server unreachable")


def recorded_reward(prompts, responses):
    """length_reward, and each call's scores appended to $RT_SCORES_DIR/scores-rank{RANK}.jsonl
    (with $RT_WRITE_PID set, the process id too, in $RT_SCORES_DIR/pid-rank{RANK})."""
    import json

    scores = [len(r) / 10 for r in responses]
    if "RT_SCORES_DIR" in os.environ:
        folder, rank = Path(os.environ["RT_SCORES_DIR"]), os.environ.get("RANK", "0")
        with (folder / f"scores-rank{rank}.jsonl").open("a") as f:
            f.write(json.dumps(scores) + "\n")
        if "RT_WRITE_PID" in os.environ:
            (folder / f"pid-rank{rank}").write_text(str(os.getpid()))
    if "RT_SLOW_S" in os.environ:
        import time

        time.sleep(float(os.environ["RT_SLOW_S"]))
    return scores


def nan_on_rank1_reward(prompts, responses):
    """recorded_reward, with NaN for the first response on rank 1 only."""
    scores = recorded_reward(prompts, responses)
    if os.environ.get("RANK", "0") == "1":
        scores[0] = float("nan")
    return scores


def parity_reward(prompts, responses):
    """0/1 by the parity of each response's length in characters (groups of 2 tie half the
    time, as with a verifiable reward)."""
    return [float(len(r) % 2) for r in responses]


def hanging_reward(prompts, responses):
    """Never returns (a reward stuck on a lock or a network call): for timeout_s."""
    import time

    time.sleep(3600)
    return [0.0 for _ in responses]


def column_reward(prompts, responses, *, answer, **columns):
    """Records what it was given (each prompt with its row's ``answer`` and ``key``) in
    $RT_COLUMNS_DIR/columns-rank{RANK}.jsonl; kills its process at call $RT_KILL_AT (with
    $RT_COUNTER set). Scores the response length."""
    import json

    if "RT_COUNTER" in os.environ and _count_call() == int(os.environ.get("RT_KILL_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    folder, rank = Path(os.environ["RT_COLUMNS_DIR"]), os.environ.get("RANK", "0")
    with (folder / f"columns-rank{rank}.jsonl").open("a") as f:
        f.write(json.dumps({"prompts": prompts, "answer": answer, "key": columns["key"]}) + "\n")
    return [len(r) / 10 for r in responses]

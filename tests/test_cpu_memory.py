"""On CPU, memory a minibatch frees is reused by the next one, not faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from rewardtune.models.cpu_memory import user_chose_malloc_settings

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Three rounds of what a minibatch does: allocate 200 MB in 20 MB blocks (under the 32 MiB
# mmap threshold), touch them, free them all. Prints the page faults of rounds 2 and 3.
ROUNDS = """
import json, resource, sys
if sys.argv[1] == "keep":
    from rewardtune.models.cpu_memory import keep_freed_memory
    assert keep_freed_memory()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [bytearray(20 << 20) for _ in range(10)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults[1:]))
"""
PAGES_PER_ROUND = (200 << 20) // 4096


def faults_after_the_first_round(mode: str) -> list[int]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}  # no MALLOC_* settings
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    assert all(f < PAGES_PER_ROUND // 10 for f in faults_after_the_first_round("keep"))
    # glibc's defaults give the freed heap back and fault it in again every round
    assert all(f > PAGES_PER_ROUND // 2 for f in faults_after_the_first_round("default"))


@pytest.mark.parametrize(
    "environ, chose",
    [
        ({}, False),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, True),
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, True),
        ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, False),
    ],
)
def test_the_users_malloc_settings_win(environ, chose):
    assert user_chose_malloc_settings(environ) is chose

#!/usr/bin/env bash
# Everything issue 15 asks of one CUDA GPU, in one go (docs/performance.md, "GPU (W2)"):
#   1. W2: TinyLlama-1.1B's shape, bf16, LoRA r16, batch 64, 64 + 128 tokens, hf then fast
#      (fast/hf rollout tokens/s, update MFU, peak GPU memory);
#   2. the GPU-only tests (CUDA-graph and bfloat16 sampling equivalence, the 4-bit QLoRA recipe);
#   3. the batch x length sweep at W2's settings, with its plot;
#   4. the update's MFU at mini-batch 16, eager and with ppo.compile (profile_update.py).
# Each part has its own time limit and writes its log to OUT (default: runs/w2-gpu), so a part
# that fails or runs long leaves the others' figures. Never run by the test suite.
#
#   bash benchmarks/w2_gpu.sh [OUT]
#   PARTS="gpu_tests w2 update_mfu" W2_ENGINES="fast fast-compiled" bash benchmarks/w2_gpu.sh OUT
set -u
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/w2-gpu}"
mkdir -p "$out"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

part() {  # part NAME SECONDS COMMAND...: run COMMAND with a limit, log to OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" | grep -v -E "^\s*$" | tail -n 60
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
"$python" -c "import torch, transformers, peft; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, \
'cuda', torch.cuda.is_available())"

# PARTS picks and orders the parts (default: all); each has its own limit
for name in ${PARTS:-w2 gpu_tests sweep update_mfu}; do
  case $name in
    w2) part w2 ${W2_LIMIT:-260} "$python" "$here/ppo_step.py" --workload W2 --steps 3 \
          --engines ${W2_ENGINES:-hf fast fast-compiled} ;;
    gpu_tests) part gpu_tests ${TESTS_LIMIT:-180} "$python" -m pytest -q -p no:cacheprovider \
          "$here/../tests/test_fast_rollout.py" "$here/../tests/test_recipes.py" \
          "$here/../tests/test_ppo_update.py" -k "cuda or bfloat16 or 4bit_on_a_gpu or compiled" ;;
    sweep) part sweep ${SWEEP_LIMIT:-240} "$python" "$here/sweep.py" --workload W2 \
          --plot "$out/performance-sweep-gpu.png" ;;
    update_mfu) part update_mfu ${MFU_LIMIT:-300} "$python" "$here/profile_update.py" \
          --mini-batches 16 --compile ${MFU_COMPILE:-off on} ;;
    *) echo "unknown part $name" ;;
  esac
done

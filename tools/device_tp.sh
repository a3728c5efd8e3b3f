#!/usr/bin/env bash
# device_tp.sh -- tensor parallelism's runs on a multi-GPU machine (docs/parallel.md).
#
# Machine kind: nvidia-h100-x4 (4 x H100; the TP=2 runs use GPUs 0 and 1). On fewer
# GPUs every part that needs more is reported "not run (needs N GPUs)".
# Binaries are built on the development machine (with nvcc) and carried in
# .carry/tp/bin, with the shared libraries the GPU image lacks in .carry/tp/libs
# (run from the checkout the device tool copies):
#   ./scripts/build.sh build && mkdir -p .carry/tp/bin .carry/tp/libs
#   cp build/{pagellm,bench_throughput,bench_allreduce,test_cuda_comm,test_tensor_parallel} .carry/tp/bin/
#   cp -L /lib/x86_64-linux-gnu/lib{jansson.so.4,pcre2-8.so.0,utf8proc.so.2,microhttpd.so.12} .carry/tp/libs/
#   device run (kind nvidia-h100-x4, carry [".carry/tp"]): bash tools/device_tp.sh
# NCCL comes from the machine (libnccl.so.2 on the loader's path, or PyTorch's
# nvidia-nccl wheel, found by the runtime search; PAGELLM_NCCL_LIBRARY overrides).
# Parts (logs under $OUT, a table printed last; about 4 minutes on 4 x H100):
#   1. test_cuda_comm: NCCL found and loaded, bf16 all-reduce on every GPU, recorded in a
#      CUDA graph and replayed, and gathered on rank 0;
#   2a. on any GPU machine: the golden comparison below with 4 ranks sharing GPU 0 through
#      the staged communicator (PAGELLM_TP_COMM=host PAGELLM_TP_DEVICES=0,0,0,0);
#   2. golden presets: PL_TP_DEVICE=cuda test_tensor_parallel, TP=2 (and 4) tokens equal
#      TP=1 on the GPU, logprobs within the bf16 bound;
#   3. Llama-3-8B shape, dummy weights, S2 (batch 1, 128 in / 256 out) at TP=1 and TP=2,
#      and bench_allreduce: the all-reduce time per decode step at batch 1 (65 calls);
#   4. Llama-3-70B shape, dummy weights, TP=4: S2 batch-1 decode (ms per token against the
#      11.7 ms bound of 140 GB over four cards), the all-reduce time per step, and the
#      offline run 1024 prompts x 512 in / 256 out.
# Env: SKIP_70B=1, SKIP_GOLDEN=1; S1_SEQS (256), S1_TOKENS (8192) for the offline run.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C=${CARRY:-$ROOT/.carry/tp}
B=$C/bin
OUT=${OUT:-/tmp/pl_tp_out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$C/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT
export PAGELLM_LOG_LEVEL=info
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
NGPU=$(nvidia-smi -L | wc -l)
declare -A R

# 1. NCCL and the communicator
timeout 120 "$B/test_cuda_comm" >"$OUT/comm.log" 2>&1
rc=$?
R[comm]="rc $rc: $(grep -m1 communicator "$OUT/comm.log") $(tail -1 "$OUT/comm.log")"

# 2a. one GPU is enough: the sharded CUDA path (weights, zero embedding rows, the logits
# gather and rank-0 sampling) with 4 ranks on GPU 0 through the staged communicator
PL_TP_DEVICE=cuda PAGELLM_TP_COMM=host PAGELLM_TP_DEVICES=0,0,0,0 timeout 300 \
  "$B/test_tensor_parallel" >"$OUT/golden_tp_staged.log" 2>&1
R[staged]="rc $?: $(tail -1 "$OUT/golden_tp_staged.log")"

# 2. golden presets on the GPU: TP=2 (4) == TP=1
if [ "${SKIP_GOLDEN:-0}" = 1 ]; then R[golden]="skipped"
elif [ "$NGPU" -ge 2 ]; then
  PL_TP_DEVICE=cuda timeout 300 "$B/test_tensor_parallel" >"$OUT/golden_tp.log" 2>&1
  R[golden]="rc $?: $(tail -1 "$OUT/golden_tp.log")"
else R[golden]="not run (needs 2 GPUs)"; fi

s2() { # model tp log -> output tok/s
  timeout 240 "$B/bench_throughput" --model "$1" --load-format dummy --device cuda --warmup 1 \
    --num-prompts 1 --input-len 128 --output-len 256 --tensor-parallel-size "$2" >"$3" 2>&1
  awk '/output tokens\/s/ {print $3}' "$3"
}
M8=$ROOT/bench/models/llama-3-8b
M70=$ROOT/bench/models/llama-3-70b

# 3. Llama-3-8B: S2 at TP=1 and TP=2, all-reduce time per step
R[s2_8b_tp1]=$(s2 "$M8" 1 "$OUT/s2_8b_tp1.log")
if [ "$NGPU" -ge 2 ]; then
  R[s2_8b_tp2]=$(s2 "$M8" 2 "$OUT/s2_8b_tp2.log")
  timeout 60 "$B/bench_allreduce" --device cuda --ranks 2 --hidden 4096 --batch 1 --layers 32 \
    >"$OUT/ar_8b_tp2.log" 2>&1
  R[ar_8b_tp2]=$(grep "all-reduce:" "$OUT/ar_8b_tp2.log" || tail -1 "$OUT/ar_8b_tp2.log")
else R[s2_8b_tp2]="not run (needs 2 GPUs)"; R[ar_8b_tp2]="not run (needs 2 GPUs)"; fi

# 4. Llama-3-70B at TP=4
if [ "${SKIP_70B:-0}" = 1 ]; then R[s2_70b_tp4]="skipped"
elif [ "$NGPU" -ge 4 ]; then
  R[s2_70b_tp4]=$(s2 "$M70" 4 "$OUT/s2_70b_tp4.log")
  timeout 60 "$B/bench_allreduce" --device cuda --ranks 4 --hidden 8192 --batch 1 --layers 80 \
    >"$OUT/ar_70b_tp4.log" 2>&1
  R[ar_70b_tp4]=$(grep "all-reduce:" "$OUT/ar_70b_tp4.log" || tail -1 "$OUT/ar_70b_tp4.log")
  timeout 420 "$B/bench_throughput" --model "$M70" --load-format dummy --device cuda --warmup 1 \
    --num-prompts 1024 --input-len 512 --output-len 256 --max-num-seqs "${S1_SEQS:-256}" \
    --max-num-batched-tokens "${S1_TOKENS:-8192}" --tensor-parallel-size 4 >"$OUT/s1_70b_tp4.log" 2>&1
  R[s1_70b_tp4]=$(awk '/output tokens\/s/ {print $3}' "$OUT/s1_70b_tp4.log")
else for k in s2_70b_tp4 ar_70b_tp4 s1_70b_tp4; do R[$k]="not run (needs 4 GPUs)"; done; fi

echo
echo "== tensor parallelism ($NGPU GPUs: $(head -1 "$OUT/gpus.txt" | cut -d, -f2)) =="
echo "communicator test           ${R[comm]}"
echo "golden TP=N == TP=1, 1 GPU  ${R[staged]} (staged communicator)"
echo "golden TP=N == TP=1 (cuda)  ${R[golden]}"
echo "8B S2 TP=1 (tok/s)          ${R[s2_8b_tp1]:-fail, see s2_8b_tp1.log}"
echo "8B S2 TP=2 (tok/s)          ${R[s2_8b_tp2]:-fail, see s2_8b_tp2.log}"
echo "8B all-reduce TP=2          ${R[ar_8b_tp2]}"
v=${R[s2_70b_tp4]:-}
if [[ "$v" =~ ^[0-9.]+$ ]]; then
  echo "70B S2 TP=4 (tok/s)         $v ($(python3 -c "print(f'{1000/$v:.2f} ms/token, {11.7/(1000/$v)*100:.0f}% of the 11.7 ms bound')"))"
else echo "70B S2 TP=4 (tok/s)         ${v:-fail, see s2_70b_tp4.log}"; fi
echo "70B all-reduce TP=4         ${R[ar_70b_tp4]:-}"
echo "70B offline 1024x512/256    ${R[s1_70b_tp4]:-fail, see s1_70b_tp4.log}"

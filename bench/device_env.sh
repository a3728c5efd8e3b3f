# device_env.sh -- sourced by the device benchmark scripts (device_round2.sh, llamacpp_gpu.sh):
# where the carried binaries and libraries are, the common knobs, and the step budget.
# The caller sets ROOT, and OUT and BUDGET defaults, before sourcing.
#   BIN (.carry/bin: absolute or relative to ROOT), DEVICE (cuda), SMALL (0: the real shapes),
#   TOK (.carry/tok/llama3), BUDGET (seconds: every step's timeout ends 15 s before it).
B=${BIN:-$ROOT/.carry/bin}
case $B in /*) ;; *) B=$ROOT/$B ;; esac
DEV=${DEVICE:-cuda}
SMALL=${SMALL:-0}
TOK=${TOK:-$ROOT/.carry/tok/llama3}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PAGELLM_LOG_LEVEL=info PL_SOURCE_DIR=$ROOT
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
# a step's timeout: its own, cut so that it ends 15 s before the budget (the call's limit is 600 s)
lim() { local l=$(( $(left) - 15 )); [ $l -lt $1 ] && echo $(( l > 5 ? l : 5 )) || echo $1; }
note() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/steps.txt"; }

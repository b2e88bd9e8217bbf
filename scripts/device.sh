#!/usr/bin/env bash
# THE script for the GPU machine: one device call runs every GPU test and the benchmarks and
# ends with a short summary. It builds nothing: scripts/build_device.sh makes the binaries here
# first, in .carry/bin, and the call carries them:
#
#   scripts/build_device.sh                                  # here
#   run(command="scripts/device.sh", carry=[".carry"])       # the device tool
#
# Files under $OUT (the device tool brings back at most 8: keep it that way): summary.txt,
# device.log (nvidia-smi and every benchmark's progress lines), tests.log, bench_gemm.txt,
# bench_gemm.json, bench_attention.txt, bench_attention.json; one slot is left for bench model. The reply itself carries only the last 12,000
# characters of the output, so the long outputs go to files and the summary is printed last.
#
# Steps can be chosen: QF_DEVICE_STEPS="tests gemm" (default: "tests gemm attention", in order).
# QF_BENCH_GEMM_ARGS adds arguments to `qforge bench gemm` (e.g. "--models llama2-7b").
set -uo pipefail  # no -e: a failing step is reported and the next one still runs
cd "$(dirname "$0")/.."
OUT=${OUT:-$(pwd)/out}
mkdir -p "$OUT"
BIN=${QF_CARRY_BIN:-.carry/bin}
STEPS=${QF_DEVICE_STEPS:-tests gemm attention}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

for b in qforge test_cuda; do
  if [ ! -x "$BIN/$b" ]; then
    echo "device.sh: $BIN/$b is missing: run scripts/build_device.sh here and carry .carry" >&2
    exit 2
  fi
done

# cuBLASLt is linked dynamically: the toolkit's copy, else the one PyTorch's wheels bring.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ! ldd "$BIN/qforge" | grep -q "libcublasLt.*=> /"; then
  wheel_lib=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
  [ -n "$wheel_lib" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$wheel_lib
fi

# The binaries were linked here (Debian 12, glibc 2.36): a loader error now beats a confusing
# failure in every step.
if ! loader_error=$("$BIN/qforge" --help 2>&1 >/dev/null); then
  echo "device.sh: the carried qforge does not start on this machine:" >&2
  echo "$loader_error" >&2
  ldd --version 2>&1 | head -n 1 >&2
  exit 3
fi

echo "== device"
LOG=$OUT/device.log
nvidia-smi >"$LOG" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
ldd "$BIN/qforge" | grep -E "cublas|not found" || true

STATUS=()
run_step() {  # run_step NAME COMMAND...: times it and records its exit status
  local name=$1
  shift
  local t0=$(date +%s)
  "$@"
  local rc=$?
  STATUS+=("$name: exit $rc, $(( $(date +%s) - t0 )) s")
}

for step in $STEPS; do
  case $step in
    tests)
      echo "== GPU tests ($BIN/test_cuda)"
      # CUBLASLT_LOG_LEVEL=2: cuBLASLt prints why it refuses a call (errors only) into the log.
      run_step tests bash -c "CUBLASLT_LOG_LEVEL=2 '$BIN/test_cuda' --gtest_brief=1 >'$OUT/tests.log' 2>&1"
      ;;
    gemm)
      echo "== bench gemm"
      # shellcheck disable=SC2086
      run_step "bench gemm" bash -c "'$BIN/qforge' bench gemm --json-file '$OUT/bench_gemm.json' ${QF_BENCH_GEMM_ARGS:-} >'$OUT/bench_gemm.txt' 2>>'$LOG'"
      tail -n 3 "$LOG"
      ;;
    attention)
      echo "== bench attention"
      # The floors from the ceilings bench gemm measured in this run, when it ran.
      ceil_args=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["ceilings"]; print("--peak-tflops %.1f --copy-gb-s %.1f" % (c["bf16_tflops"], c["copy_gb_s"]))' "$OUT/bench_gemm.json" 2>/dev/null)
      run_step "bench attention" bash -c "'$BIN/qforge' bench attention --json-file '$OUT/bench_attention.json' $ceil_args >'$OUT/bench_attention.txt' 2>>'$LOG'"
      tail -n 3 "$LOG"
      ;;
    # model)  bench model: added with the runtime's benchmark
    *) echo "device.sh: unknown step '$step'" >&2 ;;
  esac
done

# ---- the short summary (last, so that it is in the reply) ----------------------------------
echo
echo "==================== summary ===================="
for s in "${STATUS[@]}"; do note "step $s"; done
if [ -f "$OUT/tests.log" ]; then
  note "tests: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]' "$OUT/tests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$OUT/tests.log" | head -n 20 | tee -a "$SUMMARY"
fi
if [ -f "$OUT/bench_gemm.json" ]; then
  python3 - "$OUT/bench_gemm.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
r = json.load(open(sys.argv[1]))
c = r["ceilings"]
print(f'{r["device"]}: copy {c["copy_gb_s"]:.0f} GB/s, BF16 {c["bf16_tflops"]:.0f} TFLOP/s, '
      f'FP8 {c["fp8_precise_tflops"]:.0f} (fast acc. {c["fp8_fast_tflops"]:.0f}) TFLOP/s ({"measured" if c["measured"] else "nominal"})')
if r.get("errors"):
    print(f'{len(r["errors"])} FAILED cases; the first: {r["errors"][0][:400]}')
rows = {(x["model"], x["layer"], x["m"], x["kernel"]): x for x in r["rows"]}
order = list(dict.fromkeys((x["model"], x["layer"]) for x in r["rows"]))
ms = sorted({x["m"] for x in r["rows"]})
print("decode: W GB/s (% of copy bandwidth) and us; * = selected; speedup = cuBLAS BF16 time / GEMV time")
print(f'{"model":10} {"layer":7} {"M":>3} {"gemv_bf16":>22} {"cublaslt_bf16":>22} {"speedup":>7}')
for m in (m for m in ms if m <= 16):
    for model, layer in order:
        g, b = rows.get((model, layer, m, "gemv_bf16")), rows.get((model, layer, m, "cublaslt_bf16"))
        def cell(x):
            if not x:
                return f'{"-":>22}'
            pct = 100 * x["all_gb_s"] / c["copy_gb_s"]
            return f'{x["weight_gb_s"]:6.0f} ({pct:3.0f}%) {x["median_us"]:7.1f}{"*" if x["selected"] else " "}'
        sp = f'{b["median_us"] / g["median_us"]:7.2f}' if g and b else f'{"-":>7}'
        print(f'{model:10} {layer:7} {m:3} {cell(g)} {cell(b)} {sp}')
big = max(ms)
print(f"prefill M={big}: TFLOP/s (us)")
print(f'{"model":10} {"layer":7} {"cublaslt_bf16":>17} {"cublaslt_fp8":>17} {"cublaslt_fp8_fast":>17}')
for model, layer in order:
    cells = []
    for k in ("cublaslt_bf16", "cublaslt_fp8", "cublaslt_fp8_fast"):
        x = rows.get((model, layer, big, k))
        cells.append(f'{x["tflops"]:6.0f} ({x["median_us"]:8.1f})' if x else f'{"-":>17}')
    print(f'{model:10} {layer:7} ' + " ".join(cells))
# Decode at batch 1: one block's four layers with the selected kernels, against reading every
# weight once at the copy bandwidth (issue 3's decode target is 1.25x of that floor).
for model in dict.fromkeys(m for m, _ in order):
    sel = [x for x in r["rows"] if x["model"] == model and x["m"] == 1 and x["selected"] and x["activation_format"] == "bf16"]
    if sel:
        t = sum(x["median_us"] for x in sel)
        floor = sum(x["byte_floor_us"] for x in sel)
        print(f'{model}: decode M=1, one block\'s linear layers: {t:.1f} us against a byte floor of {floor:.1f} us (x{t / floor:.2f})')
EOF
fi
if [ -f "$OUT/bench_attention.txt" ]; then
  note "attention (see bench_attention.txt):"
  head -n 40 "$OUT/bench_attention.txt" | tee -a "$SUMMARY"
fi
echo "(full outputs under \$OUT: tests.log, bench_*.txt, bench_*.json, device.log)"

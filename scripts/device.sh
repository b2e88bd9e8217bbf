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
# bench_gemm.json, bench_attention.txt, bench_attention.json, bench_model.json (every
# `bench model` run and the PyTorch peer; their tables are in summary.txt). The reply itself
# carries only the last 12,000 characters of the output, so the long outputs go to files and the
# summary is printed last.
#
# Steps can be chosen: QF_DEVICE_STEPS="tests model peer" (default: "tests gemm attention model
# peer ppl qppl", in order; "qppl" compares the perplexity through the quantized kernels (fp6, and a
# carried fireq-w4a8 checkpoint) with the CPU simulation; QF_BENCH_WEIGHTS picks the linear modes
# of the synthetic bench model runs (default "bf16 w4a8 fp6"), QF_BENCH_KV their KV caches (default
# "bf16"; "int4" / "fp8" add FP8 queries: FireQ's attention); "quantize" times `qforge quantize --recipe gptq-w4g128` on the default
# model and scores the result; "ppl" compares GPU and CPU perplexity, QF_PPL_ARGS its windows). QF_BENCH_GEMM_ARGS adds arguments to `qforge bench gemm` (e.g. "--models
# llama2-7b"). QF_BENCH_MODELS: what `bench model` runs (default "llama2-7b default": the
# synthetic llama2-7b of issue 3's targets, then the default model file when present);
# QF_BENCH_MODEL_ARGS adds arguments to each. QF_PEER_MODELS (default "llama2-7b"): the
# synthetic shapes bench/peer_torch.py runs. QF_TEST_FILTER: a gtest filter for the tests step.
#
# Step "peers" (not in the default list: it adds a few minutes; e.g. QF_DEVICE_STEPS="gemm peers"):
# the kernel peers of issues 5 and 6, built here by scripts/build_peers.sh from fetched copies
# (never in the repo) into .carry/bin/peer_*, timed in the same call as qforge's own kernels. It
# reuses this run's bench_gemm.json when the gemm step ran first, else runs `bench gemm` on the FP6
# and w4a8 kernels only; the side-by-side tables (scripts/peers_table.py) go into summary.txt
# (the reply shows only their summary lines) and the joined rows into bench_model.json under
# "kernel_peers". QF_PEER_FP6_ARGS adds arguments to peer_fp6_llm (e.g. "--models llama2-7b").
# Peers: peer_fp6_llm (issue 5: fp6_llm, our harness bench/peers/fp6_llm_bench.cu) and
# peer_cutlass_int4_fp8 (issue 6: CUTLASS's example 55 INT4 x FP8, run at the w4a8 shapes by
# scripts/peer_cutlass_int4_fp8.py with the example's own timing; see there).
#
# The default model (98 MB) cannot travel in one call (64 MiB per call): scripts/build_device.sh
# splits it into .model_part1 and .model_part2 (47 MiB each); carry them one per call, before
# the main call (ignored paths stay on a warm machine between calls, and models/ too once joined;
# the machine is given back after 30 s idle, so make the three calls back to back):
#   run(command="ls -l .model_part1", carry=[".model_part1"])
#   run(command="ls -l .model_part2", carry=[".model_part2"])
#   run(command="scripts/device.sh", carry=[".carry"])
# This script joins them into models/, checks the sha256 and exports QF_MODEL for the tests and
# bench model; without them the model tests skip (and say so in the summary).
set -uo pipefail  # no -e: a failing step is reported and the next one still runs
cd "$(dirname "$0")/.."
# WikiText-2 (ppl, quantize's calibration): ../shared is not carried; build_device.sh copies its
# data/ into .carry/data.
[ -z "${QF_SHARED_DIR:-}" ] && [ -d .carry/data ] && export QF_SHARED_DIR=$(pwd)/.carry
OUT=${OUT:-$(pwd)/out}
mkdir -p "$OUT"
BIN=${QF_CARRY_BIN:-.carry/bin}
STEPS=${QF_DEVICE_STEPS:-tests gemm attention model peer ppl qppl}
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

# ---- the default model, reassembled from its two parts --------------------------------------
MODEL_FILE=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f .model_part1 ] && [ -f .model_part2 ]; then
  mkdir -p models
  cat .model_part1 .model_part2 >"$MODEL_FILE.tmp" && mv "$MODEL_FILE.tmp" "$MODEL_FILE"
fi
if [ -f "$MODEL_FILE" ]; then
  if [ "$(sha256sum "$MODEL_FILE" | cut -d' ' -f1)" = "$MODEL_SHA" ]; then
    QF_MODEL=$(pwd)/$MODEL_FILE
    export QF_MODEL
    MODEL_NOTE="default model: $MODEL_FILE (sha256 ok)"
  else
    MODEL_NOTE="default model: $MODEL_FILE has the WRONG sha256 (parts missing or out of order?); model tests skip"
    mv "$MODEL_FILE" "$MODEL_FILE.bad"
  fi
else
  MODEL_NOTE="default model: absent (carry .model_part1 and .model_part2); model tests skip"
fi
echo "$MODEL_NOTE"
WORK=$(mktemp -d)

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
      # CUBLASLT_LOG_LEVEL=1: cuBLASLt prints why it refuses a call (errors only) into the log
      # (level 2 traces every call).
      run_step tests bash -c "CUBLASLT_LOG_LEVEL=1 '$BIN/test_cuda' --gtest_brief=1 --gtest_filter='${QF_TEST_FILTER:-*}' >'$OUT/tests.log' 2>&1"
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
    model)
      for m in ${QF_BENCH_MODELS:-llama2-7b default}; do
        if [ "$m" = default ]; then
          [ -n "${QF_MODEL:-}" ] || { echo "bench model: the default model is absent, skipped" >&2; continue; }
          runs="default:"
        else
          # Synthetic models once per linear mode (QF_BENCH_WEIGHTS: bf16, w4a8 = FireQ, fp6 = FP6-LLM)
          # and KV cache (QF_BENCH_KV: bf16; int4 / fp8 run with FP8 queries, FireQ's attention).
          runs=""
          for w in ${QF_BENCH_WEIGHTS:-bf16 w4a8 fp6}; do
            for kv in ${QF_BENCH_KV:-bf16}; do runs="$runs $m:$w:$kv"; done
          done
        fi
        for r in $runs; do
          m=${r%%:*}; rest=${r#*:}; w=${rest%%:*}; kv=${rest#*:}
          if [ "$m" = default ]; then what=""; name=default
          else
            what="--synthetic $m --weights $w"; name=$m; [ "$w" = bf16 ] || name=$m-$w
            [ "$kv" = bf16 ] || { what="$what --kv $kv --fp8-queries"; name=$name-kv$kv; }
          fi
          echo "== bench model $name"
          # shellcheck disable=SC2086
          run_step "bench model $name" bash -c "'$BIN/qforge' bench model $what --json-file '$WORK/model_$name.json' ${QF_BENCH_MODEL_ARGS:-} >'$WORK/model_$name.txt' 2>>'$LOG'"
          tail -n 2 "$LOG"
        done
      done
      ;;
    qppl)
      # Issues 5 and 6: perplexity through the quantized kernels equal to the CPU simulation of the
      # same checkpoint. Recipes that need no calibration are quantized here (seconds); a
      # checkpoint carried in .carry/ckpt (config.json, tokenizer.gguf) with its safetensors in
      # .model_part_ck1/2 (fireq-w4a8, now with the INT4 KV cache: GPTQ calibration is too slow for a device call) runs too.
      [ -n "${QF_MODEL:-}" ] || { echo "qppl: the default model is absent, skipped" >&2; continue; }
      ckpts=""
      for r in ${QF_QPPL_RECIPES:-fp6}; do
        run_step "quantize $r" bash -c "'$BIN/qforge' quantize '$QF_MODEL' --recipe $r -o '$WORK/q-$r' --force --quiet >>'$LOG' 2>&1"
        ckpts="$ckpts $r"
      done
      if [ -f .carry/ckpt/config.json ] && [ -f .model_part_ck1 ] && [ -f .model_part_ck2 ]; then
        mkdir -p "$WORK/q-carried" && cp .carry/ckpt/* "$WORK/q-carried/" && cat .model_part_ck1 .model_part_ck2 >"$WORK/q-carried/model.safetensors"
        ckpts="$ckpts carried"
      fi
      for c in $ckpts; do
        for dev in cuda cpu; do
          run_step "qppl $c $dev" bash -c "'$BIN/qforge' ppl '$WORK/q-$c' --device $dev ${QF_PPL_ARGS:---ctx 2048 --chunks 16} --json --quiet >'$WORK/qppl_${c}_$dev.json' 2>>'$LOG'"
        done
      done
      ;;
    peer)
      for m in ${QF_PEER_MODELS:-llama2-7b}; do
        echo "== peer: PyTorch eager, $m"
        run_step "peer torch $m" bash -c "python3 bench/peer_torch.py --synthetic '$m' --json-file '$WORK/peer_$m.json' >/dev/null 2>>'$LOG'"
        tail -n 2 "$LOG"
      done
      ;;
    peers)
      # Issues 5 and 6: kernel peers (scripts/build_peers.sh), each writing its JSON to $WORK/peers/
      # (not $WORK/peer_*.json: those are the PyTorch peer's, read by the bench_model summary).
      mkdir -p "$WORK/peers"
      if [ -x "$BIN/peer_fp6_llm" ]; then
        echo "== peers: fp6_llm"
        # shellcheck disable=SC2086
        run_step "peer fp6_llm" bash -c "'$BIN/peer_fp6_llm' --json '$WORK/peers/fp6_llm.json' ${QF_PEER_FP6_ARGS:-} >>'$LOG' 2>&1"
        tail -n 2 "$LOG"
      else
        echo "peers: $BIN/peer_fp6_llm is absent (scripts/build_peers.sh builds it), skipped" >&2
      fi
      # qforge's side: this run's bench_gemm.json when it has the FP6 rows, else bench gemm of the
      # FP6 e3m2 and w4a8 kernels alone (the cuBLAS baselines come with it; nominal ceilings).
      if [ -f "$OUT/bench_gemm.json" ] && grep -q '"fp6_e3m2' "$OUT/bench_gemm.json"; then
        PEERS_GEMM=$OUT/bench_gemm.json
      else
        echo "== peers: bench gemm (fp6_e3m2, w4a8 kernels)"
        PEERS_GEMM=$WORK/peers/qforge_gemm.json
        run_step "peers bench gemm" bash -c "'$BIN/qforge' bench gemm --kernels fpx_gemm_fp6_e3m2,fpx_dequant_cublas_fp6_e3m2,w4a8_gemv,w4a8_dequant_cublas --no-ceilings --json-file '$PEERS_GEMM' >/dev/null 2>>'$LOG'"
        tail -n 2 "$LOG"
      fi
      # CUTLASS's INT4 x FP8 example at the w4a8 shapes (taken from that JSON), group 128.
      if [ -x "$BIN/peer_cutlass_int4_fp8" ] && [ -f "$PEERS_GEMM" ]; then
        echo "== peers: CUTLASS int4 x fp8 (example 55)"
        commit=$(awk '$1 == "cutlass_int4_fp8" {print $2}' .carry/peer_commits 2>/dev/null)
        run_step "peer cutlass int4xfp8" python3 scripts/peer_cutlass_int4_fp8.py --bin "$BIN/peer_cutlass_int4_fp8" \
          --shapes-from "$PEERS_GEMM" --json "$WORK/peers/cutlass_int4_fp8.json" --commit "${commit:-unknown}" 2>>"$LOG"
        tail -n 1 "$LOG"
      fi
      ;;
    ppl)
      # Issue 3: GPU perplexity equal to CPU perplexity within 0.1 %; the same windows on both.
      [ -n "${QF_MODEL:-}" ] || { echo "ppl: the default model is absent, skipped" >&2; continue; }
      for dev in cuda cpu; do
        echo "== ppl --device $dev"
        # shellcheck disable=SC2086
        run_step "ppl $dev" bash -c "'$BIN/qforge' ppl '$QF_MODEL' --device $dev ${QF_PPL_ARGS:---ctx 2048 --chunks 32} --json --quiet >'$WORK/ppl_$dev.json' 2>>'$LOG'"
      done
      ;;
    quantize)
      # Issue 4: how long GPTQ W4 g128 takes with the default calibration (128 x 2048), on the GPU
      # when present; then its simulated perplexity on the CPU and on the GPU.
      [ -n "${QF_MODEL:-}" ] || { echo "quantize: the default model is absent, skipped" >&2; continue; }
      echo "== quantize gptq-w4g128"
      run_step "quantize gptq-w4g128" bash -c "'$BIN/qforge' quantize '$QF_MODEL' --recipe gptq-w4g128 -o '$WORK/q-gptq-w4g128' ${QF_QUANTIZE_ARGS:-} >'$WORK/quantize.txt' 2>&1"
      tail -n 25 "$WORK/quantize.txt" >>"$LOG"
      if [ -f "$WORK/q-gptq-w4g128/config.json" ]; then
        run_step "ppl gptq-w4g128 cpu" bash -c "'$BIN/qforge' ppl '$WORK/q-gptq-w4g128' --device cpu ${QF_PPL_ARGS:---ctx 2048 --chunks 32} --json --quiet >'$WORK/ppl_q.json' 2>>'$LOG'"
        # The same simulation on the GPU (runtime/simulation_engine.h): equal to FP32 order.
        run_step "ppl gptq-w4g128 cuda --simulate" bash -c "'$BIN/qforge' ppl '$WORK/q-gptq-w4g128' --device cuda --simulate ${QF_PPL_ARGS:---ctx 2048 --chunks 32} --json --quiet >'$WORK/ppl_qsim.json' 2>>'$LOG'"
      fi
      ;;
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
print(f'{"model":10} {"layer":7} {"M":>3} {"gemv_bf16_v2":>22} {"cublaslt_bf16":>22} {"speedup":>7}')
for m in (m for m in ms if m <= 16):
    for model, layer in order:
        g, b = rows.get((model, layer, m, "gemv_bf16_v2")), rows.get((model, layer, m, "cublaslt_bf16"))
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
if [ -f "$OUT/tests.log" ]; then
  note "$MODEL_NOTE"
  grep -E '^\[ model    \]' "$OUT/tests.log" | tee -a "$SUMMARY"
fi
for t in "$WORK"/model_*.txt; do
  [ -f "$t" ] || continue
  note "---- bench $(basename "$t" .txt)"
  tee -a "$SUMMARY" <"$t"
done
# bench_model.json: every bench model run and every peer run; the ratios qforge / torch.
python3 - "$WORK" "$OUT/bench_model.json" <<'EOF' | tee -a "$SUMMARY"
import glob, json, os, sys
work, out = sys.argv[1], sys.argv[2]
runs = {os.path.basename(p)[6:-5]: json.load(open(p)) for p in sorted(glob.glob(f"{work}/model_*.json"))}
peers = {os.path.basename(p)[5:-5]: json.load(open(p)) for p in sorted(glob.glob(f"{work}/peer_*.json"))}
if runs or peers:
    json.dump({"runs": runs, "peer": peers}, open(out, "w"), indent=1)
for name, peer in peers.items():
    run = runs.get(name)
    if not run:
        print(f"peer {name}: no qforge run of the same model to compare with")
        continue
    print(f"qforge vs {peer['peer']}, torch {peer['torch']}, {name}; speedup = torch time / qforge time")
    qp = {(r["batch"], r["prompt"]): r for r in run["prefill"]}
    for r in peer["prefill"]:
        q = qp.get((r["batch"], r["prompt"]))
        if q and not q.get("error") and "ms" in r:
            print(f'  prefill {r["batch"]}x{r["prompt"]}: qforge {q["ms"]:.2f} ms, torch {r["ms"]:.2f} ms, speedup {r["ms"] / q["ms"]:.2f}')
        else:
            print(f'  prefill {r["batch"]}x{r["prompt"]}: qforge {(q or {}).get("error") or (q or {}).get("ms")}, torch {r.get("ms", r.get("error"))}')
    qd = {r["batch"]: r for r in run["decode"]}
    for r in peer["decode"]:
        q = qd.get(r["batch"])
        if q and not q.get("error") and "ms_per_step" in r:
            print(f'  decode b{r["batch"]}: qforge {q["ms_per_step"]:.3f} ms/step, torch {r["ms_per_step"]:.3f} ms/step, speedup {r["ms_per_step"] / q["ms_per_step"]:.2f}')
        else:
            print(f'  decode b{r["batch"]}: qforge {(q or {}).get("error") or (q or {}).get("ms_per_step")}, torch {r.get("ms_per_step", r.get("error"))}')
EOF
# The kernel peers (step "peers"): the full tables into summary.txt, their summary lines here.
if [ -n "${PEERS_GEMM:-}" ] && [ -f "$PEERS_GEMM" ]; then
  peer_args=(--qforge "$PEERS_GEMM")
  [ -f "$WORK/peers/fp6_llm.json" ] && peer_args+=(--fp6-llm "$WORK/peers/fp6_llm.json")
  [ -f "$WORK/peers/cutlass_int4_fp8.json" ] && peer_args+=(--cutlass-int4-fp8 "$WORK/peers/cutlass_int4_fp8.json")
  if [ ${#peer_args[@]} -gt 2 ]; then
    echo "---- kernel peers (full tables in summary.txt)"
    python3 scripts/peers_table.py "${peer_args[@]}" --merge-into "$OUT/bench_model.json" >>"$SUMMARY"
    python3 scripts/peers_table.py "${peer_args[@]}" --brief
  else
    note "kernel peers: no peer output (see device.log)"
  fi
fi
if [ -f "$OUT/bench_attention.txt" ]; then
  note "attention (see bench_attention.txt):"
  head -n 40 "$OUT/bench_attention.txt" | tee -a "$SUMMARY"
fi
if ls "$WORK"/ppl_*.json >/dev/null 2>&1; then
  python3 - "$WORK" <<'EOF' | tee -a "$SUMMARY"
import json, os, sys
work = sys.argv[1]
def load(name):
    p = os.path.join(work, f"ppl_{name}.json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
g, c, q, qs = load("cuda"), load("cpu"), load("q"), load("qsim")
for name, r in (("cuda", g), ("cpu", c), ("gptq-w4g128 (cpu, simulated)", q), ("gptq-w4g128 (cuda, simulated)", qs)):
    if r:
        print(f'ppl {name}: {r["ppl"]:.4f} +- {r["ppl_stderr"]:.4f} over {r["tokens"]} tokens (ctx {r["ctx"]}, {r["chunks"]} windows), {r["seconds"]:.1f} s')
if g and c:
    print(f'ppl cuda vs cpu: {100 * (g["ppl"] / c["ppl"] - 1):+.4f} % (issue 3: within 0.1 %)')
if q and qs:
    print(f'ppl gptq-w4g128 simulated, GPU vs CPU: {100 * (qs["ppl"] / q["ppl"] - 1):+.5f} % (issue 4: the same simulation)')
EOF
fi
if ls "$WORK"/qppl_*_cuda.json >/dev/null 2>&1; then
  python3 - "$WORK" <<'EOF' | tee -a "$SUMMARY"
import glob, json, os, sys
for gp in sorted(glob.glob(os.path.join(sys.argv[1], "qppl_*_cuda.json"))):
    cp = gp[:-len("cuda.json")] + "cpu.json"
    name = os.path.basename(gp)[5:-len("_cuda.json")]
    try:
        g, c = json.load(open(gp)), json.load(open(cp))
    except Exception as e:
        print(f"qppl {name}: incomplete ({e})")
        continue
    print(f'qppl {name}: kernels {g["ppl"]:.4f}, CPU simulation {c["ppl"]:.4f} over {c["tokens"]} tokens: '
          f'{100 * (g["ppl"] / c["ppl"] - 1):+.4f} % (issues 5, 6: within 0.1 %)')
EOF
fi
if [ -f "$LOG" ] && grep -q "quantize" "$LOG"; then
  note "quantize (tail of its output):"
  grep -iE "elapsed|peak|took|total|error|wrote" "$LOG" | tail -n 6 | tee -a "$SUMMARY"
fi
rm -rf "$WORK"
echo "(full outputs under \$OUT: tests.log, bench_*.txt, bench_*.json, device.log)"

#!/usr/bin/env python3
"""Runs the CUTLASS INT4 x FP8 peer of issue 6 at qforge's w4a8 shapes and writes its JSON.

The peer is CUTLASS's own Hopper mixed-input example, examples/55_hopper_mixed_dtype_gemm/
55_hopper_int4_fp8_gemm.cu, built unchanged from a fetched copy by scripts/build_peers.sh into
.carry/bin/peer_cutlass_int4_fp8 (no CUTLASS code is in the repository). It computes
D[M, N] = A[M, K] (FP8 E4M3) x B[N, K]^T (INT4, one FP8 scale per group of --g along K, its
lookup-table encoding and offline shuffle), FP32 accumulation, FP16 out, with the operands
swapped so that the INT4 weights go through registers (its header comment), and checks its
result against a plain FP8 GEMM of the dequantized weights ("Disposition: Passed").

    python3 scripts/peer_cutlass_int4_fp8.py --bin .carry/bin/peer_cutlass_int4_fp8 \\
        --shapes-from bench_gemm.json --json cutlass.json [--batches 1,16,128,1024,4096]

Shapes: the (model, layer, N, K) of the qforge `bench gemm` JSON given (the same run's shapes,
so the table joins without a second copy of the shape list); group 128 like qforge's w4a8.

Its timing is the example's own, NOT bench gemm's method: the mean of --iterations launches after
--warmup, each launch synchronised (so the host's launch latency, a few us, is inside every
interval: this penalises the peer at small M), on ONE operand set (weights of up to ~50 MB stay
in the H100's L2 between launches: this favours the peer at small M on the 7B/8B shapes). The
summary table says so; read small-M ratios with both in mind.
"""
import argparse
import json
import re
import subprocess
import sys


def shapes_from(gemm_json):
    g = json.load(open(gemm_json))
    return list(dict.fromkeys((r["model"], r["layer"], r["n"], r["k"]) for r in g["rows"]))


def run_one(binary, m, n, k, group, iterations, warmup, timeout):
    cmd = [binary, f"--m={m}", f"--n={n}", f"--k={k}", f"--g={group}", "--l=1",
           f"--iterations={iterations}", f"--warmup={warmup}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"timed out after {timeout} s")
    out = p.stdout + p.stderr
    ms = re.search(r"Avg runtime:\s*([0-9.eE+-]+)\s*ms", out)
    gf = re.search(r"GFLOPS:\s*([0-9.eE+-]+)", out)
    disp = re.search(r"Disposition:\s*(\w+)", out)
    row = dict(us=1e3 * float(ms.group(1)) if ms else 0.0, gflops=float(gf.group(1)) if gf else 0.0,
               ok=bool(disp and disp.group(1) == "Passed" and p.returncode == 0 and ms), error="")
    if not row["ok"]:
        tail = " | ".join(out.strip().splitlines()[-3:])
        row["error"] = f"exit {p.returncode}, disposition {disp.group(1) if disp else 'none'}: {tail[:300]}"
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the built example (.carry/bin/peer_cutlass_int4_fp8)")
    ap.add_argument("--shapes-from", required=True, help="a qforge bench gemm JSON: its (model, layer, N, K)")
    ap.add_argument("--json", required=True, help="output file")
    ap.add_argument("--batches", default="1,16,128,1024,4096", help="batch sizes M (default 1,16,128,1024,4096)")
    ap.add_argument("--group", type=int, default=128, help="weights per FP8 scale along K (default 128, as qforge)")
    ap.add_argument("--iterations", type=int, default=200, help="timed launches per case (the example's mean)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--commit", default="unknown", help="the fetched copy's commit (build_peers.sh writes it next to the binary)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per case")
    a = ap.parse_args()
    rows = []
    for model, layer, n, k in shapes_from(a.shapes_from):
        for m in (int(x) for x in a.batches.split(",")):
            r = run_one(a.bin, m, n, k, a.group, a.iterations, a.warmup, a.timeout)
            r.update(model=model, layer=layer, n=n, k=k, m=m)
            rows.append(r)
            print(f"[peer cutlass int4 x fp8] {model} {layer} M={m} N={n} K={k}: "
                  + (f"{r['us']:.2f} us, {r['gflops']:.0f} GFLOP/s" if r["ok"] else "FAILED " + r["error"]),
                  file=sys.stderr, flush=True)
    doc = dict(peer="cutlass_int4_fp8", repo="NVIDIA/cutlass", commit=a.commit,
               example="examples/55_hopper_mixed_dtype_gemm/55_hopper_int4_fp8_gemm.cu",
               format=f"INT4 weights, FP8 E4M3 scale per {a.group} (lut encoding, offline shuffle) x FP8 E4M3 activations, FP16 out",
               timing=f"the example's own: mean of {a.iterations} synchronised launches after {a.warmup}, one operand set",
               rows=rows)
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

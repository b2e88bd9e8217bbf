#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from one scripts/device.sh run's JSON outputs.

    python3 scripts/bench_report.py OUTDIR            # OUTDIR holds bench_gemm.json,
                                                     # bench_attention.json, bench_model.json

Prints, for whichever files are present: the decode-size linear table (every kernel next to
cuBLAS BF16 and FP8), the prefill-size linear table, attention, the whole-model benchmark with
the issue-3 targets, and the PyTorch peer ratios. Numbers are copied from the JSON, never edited.
"""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def gemm_tables(g):
    c = g["ceilings"]
    print(f'### bench gemm: {g["device"]}, {g["date_utc"]}\n')
    print(f'Ceilings measured in the same run: copy {c["copy_gb_s"]:.0f} GB/s, cuBLASLt BF16 '
          f'{c["bf16_tflops"]:.0f} TFLOP/s, FP8 {c["fp8_precise_tflops"]:.0f} TFLOP/s '
          f'(fast accumulation {c["fp8_fast_tflops"]:.0f}) at 8192^3.\n')
    rows = g["rows"]
    kernels = [k for k in dict.fromkeys(r["kernel"] for r in rows)
               if not k.startswith("cublaslt")]
    shapes = list(dict.fromkeys((r["model"], r["layer"], r["n"], r["k"]) for r in rows))
    by = {(r["model"], r["layer"], r["m"], r["kernel"]): r for r in rows}
    for ms, title in (((1, 8, 16, 64), "small batch: time in us (x = speedup over cuBLAS BF16; floor = bytes at the copy bandwidth)"),
                      ((256, 1024, 4096), "large batch: TFLOP/s (x = speedup over cuBLAS BF16)")):
        print(f'#### {title}\n')
        head = ["model", "layer", "N x K", "M", "floor", "cuBLAS BF16", "cuBLAS FP8"] + kernels
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for model, layer, n, k in shapes:
            for m in ms:
                b = by.get((model, layer, m, "cublaslt_bf16"))
                f = by.get((model, layer, m, "cublaslt_fp8"))
                if not b:
                    continue
                small = m <= 64

                def cell(r):
                    if not r:
                        return "-"
                    star = "*" if r.get("selected") else ""
                    v = f'{r["median_us"]:.1f}' if small else f'{r["tflops"]:.0f}'
                    return f'{v}{star} ({b["median_us"] / r["median_us"]:.2f}x)'
                floor = f'{b["floor_us"]:.1f}' if small else f'{b["flop_floor_us"]:.0f} us'
                line = [model, layer, f"{n} x {k}", str(m), floor,
                        f'{b["median_us"]:.1f}' if small else f'{b["tflops"]:.0f}', cell(f)]
                line += [cell(by.get((model, layer, m, kn))) for kn in kernels]
                print("| " + " | ".join(line) + " |")
        print()
    if g.get("errors"):
        print(f'{len(g["errors"])} cases failed in this run; the first: `{g["errors"][0][:300]}`\n')


def attention_table(a):
    print(f'### bench attention: {a["device"]}, {a["date_utc"]}\n')
    print(f'Floors: {a["peak_tflops"]:.0f} TFLOP/s, {a["copy_gb_s"]:.0f} GB/s. xfloor = time / max(FLOP floor, byte floor).\n')
    print("| kind | model | batch | q | past | us | TFLOP/s | GB/s | xfloor |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in a["rows"]:
        print(f'| {r["kind"]} | {r["model"]} | {r["batch"]} | {r["q_tokens"]} | {r["past"]} | '
              f'{r["median_us"]:.1f} | {r["tflops"]:.1f} | {r["gb_s"]:.0f} | {r["of_floor"]:.2f} |')
    print()


def model_tables(m):
    for name, r in m.get("runs", {}).items():
        print(f'### bench model {name}: {r["device"]}, {r["date_utc"]}\n')
        print(f'{r["model"]}; weights {r["weight_bytes"] / 2**30:.2f} GiB; peak GPU memory '
              f'{r["peak_gpu_bytes"] / 2**30:.2f} GiB; prefill passes of {r["chunk_tokens"]} tokens.\n')
        print("| prefill batch x prompt | TTFT ms | tokens/s |")
        print("| --- | --- | --- |")
        for p in r["prefill"]:
            print(f'| {p["batch"]} x {p["prompt"]} | ' + (p["error"] or f'{p["ttft_ms"]:.2f} | {p["tokens_per_s"]:.0f}') + " |")
        print("\n| decode batch (context 1024) | ms/step | tokens/s |")
        print("| --- | --- | --- |")
        for d in r["decode"]:
            print(f'| {d["batch"]} | ' + (d["error"] or f'{d["ms_per_step"]:.3f} | {d["tokens_per_s"]:.0f}') + " |")
        g, f = r.get("cublas_gemm", {}), r.get("decode_floor", {})
        print()
        if g:
            print(f'- prefill {g["prefill_batch"]}x{g["prefill_prompt"]}: {g["prefill_ms"]:.2f} ms against '
                  f'{g["total_ms"]:.2f} ms of cuBLAS BF16 GEMMs at its linear shapes: **{g["ratio"]:.3f}x** (target <= 1.2)')
        if f:
            print(f'- decode batch 1: {f["b1_ms"]:.3f} ms/step against a weight-read floor of {f["floor_ms"]:.3f} ms '
                  f'({f.get("floor_gb_s", r["copy_gb_s"]):.0f} GB/s): **{f["ratio"]:.3f}x** (target <= 1.25)')
        ops_p = {o["op"]: o["ms"] for o in r["prefill_breakdown"]["ops"]}
        ops_d = {o["op"]: o["ms"] for o in r["decode_b1_breakdown"]["ops"]}
        tp, td = sum(ops_p.values()), sum(ops_d.values())
        print("\n| op (eager, an event after each) | prefill ms | % | decode b1 us | % |")
        print("| --- | --- | --- | --- | --- |")
        for op in dict.fromkeys(list(ops_p) + list(ops_d)):
            a, b = ops_p.get(op, 0.0), ops_d.get(op, 0.0)
            print(f'| {op} | {a:.2f} | {100 * a / tp:.1f} | {1e3 * b:.1f} | {100 * b / td:.1f} |')
        print()
    for name, peer in m.get("peer", {}).items():
        run = m.get("runs", {}).get(name)
        if not run:
            continue
        print(f'### qforge vs {peer["peer"]} ({name}; torch {peer["torch"]}, transformers {peer["transformers"]})\n')
        print("| case | qforge ms | PyTorch ms | speedup |")
        print("| --- | --- | --- | --- |")
        qp = {(x["batch"], x["prompt"]): x for x in run["prefill"]}
        for x in peer["prefill"]:
            q = qp.get((x["batch"], x["prompt"]))
            if q and not q["error"] and "ms" in x:
                print(f'| prefill {x["batch"]}x{x["prompt"]} | {q["ms"]:.2f} | {x["ms"]:.2f} | {x["ms"] / q["ms"]:.2f}x |')
        qd = {x["batch"]: x for x in run["decode"]}
        for x in peer["decode"]:
            q = qd.get(x["batch"])
            if q and not q["error"]:
                t = f'{x["ms_per_step"]:.2f}' if "ms_per_step" in x else "out of memory"
                s = f'{x["ms_per_step"] / q["ms_per_step"]:.2f}x' if "ms_per_step" in x else "-"
                print(f'| decode b{x["batch"]} (ms/step) | {q["ms_per_step"]:.3f} | {t} | {s} |')
        print()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    g, a, m = load(d, "bench_gemm.json"), load(d, "bench_attention.json"), load(d, "bench_model.json")
    if not (g or a or m):
        sys.exit(f"{d}: no bench_gemm.json, bench_attention.json or bench_model.json")
    if m:
        model_tables(m)
    if g:
        gemm_tables(g)
    if a:
        attention_table(a)


if __name__ == "__main__":
    main()

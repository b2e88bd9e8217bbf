#!/usr/bin/env python3
"""Side-by-side tables of qforge's kernels and the kernel peers of issues 5 and 6, from one
scripts/device.sh run (step "peers"): qforge's `bench gemm` JSON and the peer harnesses' JSON
(bench/peers/, built by scripts/build_peers.sh), joined on (model, layer, M).

    python3 scripts/peers_table.py --qforge bench_gemm.json --fp6-llm fp6_llm.json \\
        [--cutlass-int4-fp8 cutlass.json] [--merge-into bench_model.json] [--brief]

Per row: qforge's time (the kernel LinearRegistry::select picks for the format at that M, the
one the engine runs; the fastest reported one when none is marked), the peer's, the ratio
peer time / qforge time (> 1: qforge is faster), and cuBLAS BF16 from the same qforge run.
Then the geometric mean of the ratio per batch range and the worst case. A peer row whose own
correctness check failed is shown but kept out of the summary. --merge-into adds the joined rows
under "kernel_peers" to an existing JSON file (device.sh's bench_model.json: $OUT holds at most
8 files). Numbers are copied from the inputs, never edited.
"""
import argparse
import json
import math
import os
import sys

# The peers: the qforge format they face and how to read them.
PEERS = {
    "fp6_llm": dict(title="fp6_llm (usyd-fsalab/fp6_llm, FP6 e3m2 x FP16) vs qforge FP6 e3m2 x BF16",
                    qforge_format="fp6_e3m2"),
    "cutlass_int4_fp8": dict(title="CUTLASS example 55 (INT4 x FP8, group 128) vs qforge w4a8 (INT4 g128 x FP8 per token)",
                             qforge_format="int4"),
}
RANGES = ((1, 16, "M 1-16"), (17, 128, "M 17-128"), (129, 1 << 30, "M >= 129"))


def qforge_rows(gemm, fmt):
    """(model, layer, m) -> the selected (else fastest) qforge row of weight format `fmt`."""
    best = {}
    for r in gemm["rows"]:
        if not r["weight_format"].startswith(fmt) or r["kernel"].startswith("cublaslt"):
            continue
        key = (r["model"], r["layer"], r["m"])
        cur = best.get(key)
        rank = (not r.get("selected", False), r["median_us"])
        if cur is None or rank < (not cur.get("selected", False), cur["median_us"]):
            best[key] = r
    return best


def cublas_bf16(gemm):
    return {(r["model"], r["layer"], r["m"]): r["median_us"] for r in gemm["rows"] if r["kernel"] == "cublaslt_bf16"}


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def table(name, peer, gemm, brief=False):
    spec = PEERS[name]
    q = qforge_rows(gemm, spec["qforge_format"])
    bf16 = cublas_bf16(gemm)
    out = []
    print(f'{spec["title"]}; {peer.get("device") or gemm.get("device", "?")}, peer commit {peer.get("commit", "?")[:12]}')
    print("ratio = peer time / qforge time (> 1: qforge faster); xbf16 = cuBLAS BF16 time / that time")
    if peer.get("timing"):
        print(f'peer timing: {peer["timing"]} (qforge: bench gemm\'s median over rotating operand sets)')
    if not brief:
        print(f'{"model":10} {"layer":7} {"N x K":>11} {"M":>5} {"qforge us":>9} {"kernel":<27} {"peer us":>9} '
              f'{"ratio":>6} {"bf16 us":>8} {"q xbf16":>7} {"p xbf16":>7}  check')
    for p in peer["rows"]:
        key = (p["model"], p["layer"], p["m"])
        r = q.get(key)
        b = bf16.get(key)
        ok = p.get("ok", True) and not p.get("error")
        peer_us = p["us"] if ok or p.get("us") else None
        ratio = p["us"] / r["median_us"] if r and p.get("us") else None
        row = dict(model=p["model"], layer=p["layer"], n=p["n"], k=p["k"], m=p["m"], peer_us=p.get("us"),
                   peer_ok=ok, qforge_us=r["median_us"] if r else None, qforge_kernel=r["kernel"] if r else None,
                   ratio=ratio, cublas_bf16_us=b)
        for extra in ("split_k", "max_rel_err", "gflops"):
            if extra in p:
                row["peer_" + extra] = p[extra]
        out.append(row)
        fmt = lambda v, w, d=2: f'{v:{w}.{d}f}' if isinstance(v, (int, float)) and v else f'{"-":>{w}}'
        check = "ok" if ok else ("CHECK FAILED " + (p.get("error") or f'rel. err {p.get("max_rel_err")}'))
        if not r:
            check += " (no qforge row)"
        if not brief:
            print(f'{p["model"]:10} {p["layer"]:7} {str(p["n"]) + "x" + str(p["k"]):>11} {p["m"]:5} '
                  f'{fmt(r and r["median_us"], 9)} {(r["kernel"] if r else "-"):<27} {fmt(peer_us, 9)} '
                  f'{fmt(ratio, 6)} {fmt(b, 8)} {fmt(b and r and b / r["median_us"], 7)} '
                  f'{fmt(b and p.get("us") and b / p["us"], 7)}  {check}')
    good = [x for x in out if x["ratio"] and x["peer_ok"]]
    for lo, hi, label in RANGES:
        rs = [x["ratio"] for x in good if lo <= x["m"] <= hi]
        if rs:
            wins = sum(1 for x in rs if x > 1)
            print(f'  {label}: geometric-mean ratio {geomean(rs):.2f} over {len(rs)} cases, qforge faster in {wins}, '
                  f'worst {min(rs):.2f}')
    if good:
        worst = min(good, key=lambda x: x["ratio"])
        print(f'  worst case: {worst["model"]} {worst["layer"]} M={worst["m"]}: ratio {worst["ratio"]:.2f} '
              f'(qforge {worst["qforge_us"]:.2f} us with {worst["qforge_kernel"]}, peer {worst["peer_us"]:.2f} us)')
    failed = sum(1 for x in out if not x["peer_ok"])
    if failed:
        print(f"  {failed} peer rows FAILED their correctness check (not counted above)")
    missing = sum(1 for x in out if x["qforge_us"] is None)
    if missing:
        print(f"  {missing} peer rows have no qforge row of the same (model, layer, M)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qforge", required=True, help="qforge bench gemm --json-file output")
    ap.add_argument("--fp6-llm", help="peer_fp6_llm --json output")
    ap.add_argument("--cutlass-int4-fp8", help="the CUTLASS INT4 x FP8 peer's JSON (device.sh writes it)")
    ap.add_argument("--merge-into", help="add the joined rows under 'kernel_peers' to this JSON file")
    ap.add_argument("--brief", action="store_true", help="only the titles and the summary lines, no per-row table")
    a = ap.parse_args()
    gemm = json.load(open(a.qforge))
    merged = {}
    for name, path in (("fp6_llm", a.fp6_llm), ("cutlass_int4_fp8", a.cutlass_int4_fp8)):
        if not path:
            continue
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            print(f"{name}: no output ({path} is missing or empty: see device.log)")
            continue
        peer = json.load(open(path))
        merged[name] = dict(peer={k: v for k, v in peer.items() if k != "rows"}, qforge_run=gemm.get("date_utc"),
                            rows=table(name, peer, gemm, a.brief))
        print()
    if a.merge_into and merged:
        doc = {}
        if os.path.exists(a.merge_into) and os.path.getsize(a.merge_into):
            doc = json.load(open(a.merge_into))
        doc["kernel_peers"] = merged
        with open(a.merge_into, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

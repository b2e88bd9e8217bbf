#!/usr/bin/env python3
"""PyTorch eager BF16 peer for `qforge bench model` (issue 3: "ahead of the PyTorch eager peer").

A randomly initialised Hugging Face LlamaForCausalLM of the same shape as qforge's synthetic
model (config built here, no download: the GPU machine has no network), BF16 weights, SDPA
attention, run eagerly (no torch.compile, no CUDA graphs), measured the way qforge measures:

  * prefill: BATCH x PROMPT random tokens in one forward from an empty cache, logits of the
    last token only (logits_to_keep=1, as qforge computes only the logits a batch asks for);
    median of --reps runs after one warm-up;
  * decode: BATCH sequences prefilled to CONTEXT - steps - 2 tokens, then one token per
    sequence per step through the model's KV cache (DynamicCache) until the cache holds
    CONTEXT tokens; the median step after 2 warm-up steps.

Timing: torch.cuda.Event around each call (GPU time from the first kernel enqueued to the last
one done, host launch gaps included: that is what eager costs), synchronised after each call.
Out-of-memory is reported per case, not fatal.

Prints one JSON object (and writes it to --json-file). Run by scripts/device.sh, step "peer".
This is our own script; it imports torch and transformers and copies no peer code.
"""
import argparse
import json
import statistics
import sys
import time

import torch

# The same shapes as synthetic_model_config in src/runtime/cuda_engine.cpp.
SHAPES = {
    "llama2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      rope_theta=10000.0, tie_word_embeddings=False),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, tie_word_embeddings=False),
    "llama2-70b": dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=4096,
                       rope_theta=10000.0, tie_word_embeddings=False),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True),
}


def log(msg):
    print(f"[peer torch] {msg}", file=sys.stderr, flush=True)


def build_model(name):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[name], rms_norm_eps=1e-5, head_dim=SHAPES[name]["hidden_size"] // SHAPES[name]["num_attention_heads"])
    # Built on the GPU in BF16 directly (HF's random init, normal(0, 0.02)): no 28 GB FP32 copy.
    with torch.device("cuda"):
        try:
            model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", torch_dtype=torch.bfloat16)
        except TypeError:  # older transformers
            cfg._attn_implementation = "sdpa"
            model = LlamaForCausalLM(cfg)
    model = model.to(device="cuda", dtype=torch.bfloat16).eval()
    attn = getattr(model.config, "_attn_implementation", "?")
    if attn != "sdpa":
        log(f"warning: attention implementation is {attn}, not sdpa")
    return model, cfg


def call(model, ids, past=None, keep_last=True):
    kwargs = dict(input_ids=ids, use_cache=True)
    if past is not None:
        kwargs["past_key_values"] = past
    if keep_last:
        try:
            return model(**kwargs, logits_to_keep=1)
        except TypeError:  # transformers < 4.50
            return model(**kwargs, num_logits_to_keep=1)
    return model(**kwargs)


def timed(fn):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end), out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", default="llama2-7b", choices=sorted(SHAPES))
    ap.add_argument("--prefill", default="1x512,1x2048,4x2048", help="BATCHxPROMPT cases, comma-separated")
    ap.add_argument("--decode-batches", default="1,8,32,128")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json-file", default="")
    a = ap.parse_args()

    import transformers

    torch.manual_seed(0)
    t0 = time.time()
    model, cfg = build_model(a.synthetic)
    log(f"{a.synthetic}: random BF16 LlamaForCausalLM on {torch.cuda.get_device_name()} in {time.time() - t0:.1f} s")
    V = cfg.vocab_size
    result = dict(peer="pytorch eager (transformers LlamaForCausalLM, BF16, SDPA)", torch=torch.__version__,
                  transformers=transformers.__version__, device=torch.cuda.get_device_name(), model=a.synthetic,
                  prefill=[], decode=[])

    with torch.inference_mode():
        for spec in a.prefill.split(","):
            b, p = (int(x) for x in spec.split("x"))
            row = dict(batch=b, prompt=p)
            try:
                ids = torch.randint(0, V, (b, p), device="cuda")
                times = []
                for r in range(a.reps + 1):
                    ms, out = timed(lambda: call(model, ids))
                    del out
                    if r > 0:
                        times.append(ms)
                row["ms"] = statistics.median(times)
                row["tokens_per_s"] = b * p / (row["ms"] * 1e-3)
                log(f"prefill {b}x{p}: {row['ms']:.2f} ms, {row['tokens_per_s']:.0f} tok/s")
            except torch.cuda.OutOfMemoryError as e:
                row["error"] = "out of memory: " + str(e).splitlines()[0]
                log(f"prefill {b}x{p}: {row['error']}")
            torch.cuda.empty_cache()
            result["prefill"].append(row)

        for b in (int(x) for x in a.decode_batches.split(",")):
            row = dict(batch=b, context=a.context)
            past = out = None
            try:
                warm = 2
                prompt = a.context - a.decode_steps - warm
                ids = torch.randint(0, V, (b, prompt), device="cuda")
                out = call(model, ids)
                past = out.past_key_values
                del out
                times = []
                for step in range(warm + a.decode_steps):
                    nxt = torch.randint(0, V, (b, 1), device="cuda")
                    ms, out = timed(lambda: call(model, nxt, past))
                    past = out.past_key_values
                    del out
                    if step >= warm:
                        times.append(ms)
                row["ms_per_step"] = statistics.median(times)
                row["tokens_per_s"] = b / (row["ms_per_step"] * 1e-3)
                log(f"decode b{b}: {row['ms_per_step']:.3f} ms/step, {row['tokens_per_s']:.0f} tok/s")
            except torch.cuda.OutOfMemoryError as e:
                row["error"] = "out of memory: " + str(e).splitlines()[0]
                log(f"decode b{b}: {row['error']}")
            past = out = None
            torch.cuda.empty_cache()
            result["decode"].append(row)
    result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()

    text = json.dumps(result, indent=1)
    if a.json_file:
        with open(a.json_file, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Markdown tables of a benchmark result (the JSON written next to it has every number)."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return "" if value is None else str(value)


def spread(timing: dict) -> str:
    return f"{timing['median_ms']:,.1f} [{timing['min_ms']:,.1f}–{timing['max_ms']:,.1f}]"


def markdown_report(result: dict) -> str:
    """The header, then one section per part the run measured, in a fixed order."""
    parts = [_header(result)]
    parts += [render(result[key]) for key, render in SECTIONS if key in result]
    return "\n".join(parts)


def _header(result: dict) -> str:
    machine, settings, model = result["machine"], result["settings"], result["model"]
    device = machine.get("gpu", machine["cpu"])
    return (
        f"# comit bench: size {settings['size']}, {settings['device']}, batch {settings['batch']}, "
        f"{settings['precision']}\n\n"
        f"{machine['date']} · {device} · {machine['cpu_cores']} cores, {machine['torch_threads']} threads · "
        f"torch {machine['torch']} · load average {machine['load_average_at_start']} -> "
        f"{machine.get('load_average_at_end')}\n\n"
        f"Model: {model['size_parameters'] / 1e6:.1f}M-parameter transformer (h={model['hidden_size']}, "
        f"depth {model['depth']}), {model['image_size']}-px images, {model['crop_size']}-px crops, "
        f"{model['num_msg_tokens']} tokens, {model['autoencoder']} autoencoder, random weights. "
        f"Times: median [min–max] ms over {settings['repeats']} repeats, warm-up excluded.\n")


def _peak(peak: dict) -> str:
    return (f"## Matmul peak\n\n{peak['gflops']['median']:,.0f} GFLOP/s "
            f"({peak['dtype']} {peak['gemm_size']}³ GEMM; {peak['gflops']['low']:,.0f}–"
            f"{peak['gflops']['high']:,.0f} over repeats)\n")


def _forward(rows: list[dict]) -> str:
    return "## Predictor forward\n\n" + table(
        ["attention", "call", "batch", "tokens", "GFLOP/call", "ms", "GFLOP/s", "% of peak (same-moment peak)"],
        [[r["attention"], r["kind"], r["batch"], r["tokens_per_sample"], r["flops"]["total"] / 1e9,
          spread(r["timing"]), r["gflops"], f"{r['pct_of_peak']:.0f}% ({r['peak_gflops']:,.0f})"] for r in rows])


def _tokenize(rows: list[dict]) -> str:
    return "## Tokenize\n\n" + table(
        ["attention", "case", "crops", "ms / batch", "images/s", "transformer calls", "VAE enc/dec",
         "x vs baseline", "same orders / tokens", "peak MB"],
        [[r["attention"], r["case"], r["crops"], spread(r["timing"]), r["images_per_s"],
          r["calls"]["transformer_calls"], f"{r['calls']['vae_encodes']}/{r['calls']['vae_decodes']}",
          r.get("speedup_vs_baseline"),
          f"{_cell(r['same_crop_order_as_baseline'])} / {_cell(r['same_tokens_as_baseline'])}"
          if "same_tokens_as_baseline" in r else "", r["peak_memory_mb"]] for r in rows])


def _detokenize(rows: list[dict]) -> str:
    return f"## Detokenize ({rows[0]['steps']} Euler steps)\n\n" + table(
        ["attention", "case", "variant", "ms / batch", "images/s", "transformer calls", "tokens",
         "x vs baseline", "max |diff|", "peak MB"],
        [[r["attention"], r["case"], r["variant"], spread(r["timing"]), r["images_per_s"],
          r["calls"]["transformer_calls"], r["calls"]["transformer_tokens"], r.get("speedup_vs_baseline"),
          r.get("max_abs_diff_vs_baseline"), r["peak_memory_mb"]] for r in rows])


def _dataset(rows: list[dict]) -> str:
    return "## Dataset tokenize (adaptive, 3 local crops)\n\n" + table(
        ["case", "batch", "images", "ms", "images/s", "x vs one at a time", "resume check ms / shard", "peak MB"],
        [[r["case"], r["batch"], r["images"], spread(r["timing"]), r["images_per_s"],
          r.get("speedup_vs_one_at_a_time"), r.get("resume_check_ms_per_shard"), r["peak_memory_mb"]]
         for r in rows])


def _fast_paths(fast: dict) -> str:
    paths = "## Fast paths, one at a time\n\n" + table(
        ["fast path", "attention", "fast ms", "plain ms", "speed-up", "peak MB fast / plain", "max |diff|", "what"],
        [[r["fast_path"], r["attention"], spread(r["fast_timing"]), spread(r["plain_timing"]), r["speedup"],
          f"{r['fast_peak_memory_mb']:,.0f} / {r['plain_peak_memory_mb']:,.0f}", r["max_abs_diff"], r["note"]]
         for r in fast["rows"]])
    attribution = fast["adaptive_attribution"]
    costs = ", ".join(f"{name} {ms:,.1f}" for name, ms in fast["unit_costs_ms"].items())
    estimates = ", ".join(f"{mode}: baseline {e['baseline_ms']:,.0f}, ours {e['ours_ms']:,.0f}"
                          for mode, e in attribution["estimates"].items())
    savings = table(["attention", "fast path", "saved ms / batch", "share of the baseline"],
                    [[r["attention"], r["fast_path"], r["saved_ms"], f"{100 * r['share_of_baseline']:.0f}%"]
                     for r in attribution["rows"]])
    return (paths + "\n### Adaptive policy: what each saving is worth\n\nUnit costs (ms): " + costs + "\n\n"
            + savings + "\nEstimated from unit costs (ms / batch): " + estimates + "\n")


def _train(train: dict) -> str:
    if train.get("status") == "unavailable":
        return f"## Training step\n\nnot measured: {train['reason']}\n"
    note = ("\nVariants: `current` is the step as it runs now; `2026-12-06` the step before 2026-12-07 "
            "(fp32, the global crop encoded twice), timed step by step in turn with it; speed-up = "
            "current / 2026-12-06 images/s; each row's % of peak is against the GEMM peak of its own precision, "
            "timed beside its steps.\n") if any(r.get("variant") != "current" for r in train["rows"]) else ""
    return "## Training step\n\n" + table(
        ["config", "variant", "precision", "batch", "ms / step", "images/s", "speed-up", "trained writes/s", "GFLOP/s",
         "GEMM peak", "% of peak", "peak MB"],
        [[r["config"], r.get("variant", "current"), r.get("precision", "—"), r["batch"], spread(r["timing"]),
          r["images_per_s"], f"{r['speedup']:.2f}x" if "speedup" in r else "—", r.get("writes_per_s", "—"),
          r["gflops"], r.get("peak_gflops", "—"), f"{r['pct_of_peak']:.0f}%", r["peak_memory_mb"]]
         for r in train["rows"]]) + note


SECTIONS = (("peak", _peak), ("forward", _forward), ("tokenize", _tokenize), ("detokenize", _detokenize),
            ("dataset", _dataset), ("fast_paths", _fast_paths), ("train", _train))

"""LoRA DPO against full DPO on the embedded model (this CPU): seconds per step and peak RSS.

Both train the same 32 preference pairs (configs/tiny.yaml's training settings, per-device
batch 2, global batch 4, sequential order: 8 optimizer steps) through ``metajudge train`` with
the in-process launcher, each in its own process, whose peak RSS (``ru_maxrss``) is the
figure. Seconds per step: the median gap between logged steps (``train_metrics.jsonl``), so
model loading, the reference pass and saving are not in it; whole-command seconds beside it.
LoRA: r 16, alpha 32, all linear layers, the reference being the adapter disabled, merged
into a full checkpoint at the end (which the whole-command time includes).

    .venv/bin/python benchmarks/training_lora.py      # about 5 minutes here
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks"
SETTINGS = ["training.per_device_batch_size=2", "training.global_batch_size=4",
            "training.data_order=sequential", "training.learning_rate=1e-5"]
LORA = ["training.lora={r: 16, alpha: 32, target_modules: all-linear}"]
QUESTIONS = ["Name a colour.", "What is 2 + 2?", "Say hello in French.", "Name a planet.",
             "Give a synonym of 'quick'.", "What is the capital of Italy?",
             "Name a prime number above 10.", "Translate 'cat' into Spanish."]


def make_run(path: Path, overrides: list[str]) -> None:
    from metajudge.config import load_config
    from metajudge.records import DPORow, Message
    from metajudge.store import DPO_PAIRS, Store

    config = load_config(ROOT / "configs" / "tiny.yaml", SETTINGS + overrides)
    store = Store.open(path, config)
    rows = []
    for k in range(32):
        question = QUESTIONS[k % len(QUESTIONS)] + " " * (k // len(QUESTIONS))
        rows.append(DPORow(
            prompt=(Message(role="user", content=question),),
            chosen=(Message(role="assistant", content=f"A short, correct answer ({k})."),),
            rejected=(Message(role="assistant", content="I would rather not say. " * 3),),
            pair_type="actor", id=f"actor:p{k}", iteration=1, prompt_id=f"p{k}",
            chosen_id=f"p{k}#0", rejected_id=f"p{k}#1", chosen_score=4.0, rejected_score=1.0))
    store.write_all(DPO_PAIRS, rows, 1)
    store.close()


def measure(run: Path) -> dict[str, float]:
    """``metajudge train`` in a child; this process has no other children, so its
    RUSAGE_CHILDREN peak is that child's."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "metajudge.cli", "train", str(run), "--no-progress"],
                   check=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    times = [json.loads(x)["time"] for x in
             (run / "iter_01" / "train_metrics.jsonl").read_text().splitlines()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {"steps": len(times), "seconds_per_step": statistics.median(gaps),
            "command_seconds": seconds, "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", help="(internal) measure one prepared run directory")
    args = parser.parse_args()
    if args.measure:
        print("RESULT", json.dumps(measure(Path(args.measure))))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in (("full DPO", []), ("LoRA DPO", LORA)):
            run = Path(tmp) / name.replace(" ", "_")
            make_run(run, overrides)
            done = subprocess.run([sys.executable, __file__, "--measure", str(run)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
            line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
            rows[name] = json.loads(line.removeprefix("RESULT "))
            print(name, rows[name], flush=True)
    full, lora = rows["full DPO"], rows["LoRA DPO"]
    lines = ["# LoRA DPO against full DPO (embedded model, CPU)", "",
             "Command: `.venv/bin/python benchmarks/training_lora.py`. SmolLM2-135M-Instruct in "
             "float32, 32 pairs, per-device batch 2 × accumulation 2, 8 optimizer steps, the "
             "in-process launcher, each variant in its own process. LoRA r 16, alpha 32, all "
             "linear layers; its reference is the adapter disabled (no second model).", "",
             "| variant | steps | s / step | whole command s | peak RSS MB |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['steps']} | {r['seconds_per_step']:.2f} | "
                     f"{r['command_seconds']:.0f} | {r['peak_rss_mb']:.0f} |")
    step = lora["seconds_per_step"] / full["seconds_per_step"]
    rss = lora["peak_rss_mb"] / full["peak_rss_mb"]
    lines += ["", f"LoRA / full: **{step:.2f}** of the seconds per step, **{rss:.2f}** of the "
              "peak RSS."]
    (OUT / "training_lora.md").write_text("\n".join(lines) + "\n")
    sys.path.insert(0, str(Path(__file__).parent))
    from rows import save_rows

    save_rows(OUT, "training_lora", [
        {"measurement": "LoRA DPO (r 16, all linear layers), embedded model on CPU",
         "reference": "full DPO with a frozen reference, same pairs and steps",
         "ratio": f"{step:.2f} of the s/step, {rss:.2f} of the peak RSS",
         "figures": f"{lora['seconds_per_step']:.2f} vs {full['seconds_per_step']:.2f} s/step; "
                    f"{lora['peak_rss_mb']:.0f} vs {full['peak_rss_mb']:.0f} MB"}])
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Run the official tools on the harness files in results/harness and write what they print.

* Arena-Hard: arena-hard-auto v0.1's own ``show_result.py`` (the shared reference copy,
  lmarena/arena-hard-auto @ 0489bf3), unmodified, on each model's ``model_answer/`` and
  ``model_judgment/`` laid out as the tool expects (``data/arena-hard-v0.1/…``), plain and with
  ``--style-control``. It needs an environment of its era (scikit-learn < 1.6: numpy 1.26.4,
  pandas 2.2.3, scikit-learn 1.5.2, tqdm, pyyaml, requests).
* MT-Bench: FastChat's ``show_result.py --mode single`` (from the PyPI package ``fschat``).
* AlpacaEval: alpaca-eval 0.6.6's ``get_winrate`` and ``get_length_controlled_winrate`` on our
  ``annotations.json`` (the ``alpaca-eval`` extra; again in the tools' environment, whose
  scikit-learn 1.5.2 splits the cross-validation folds the older way), its ``df_gamed.csv``
  from the bundled copy instead of the hub.

Each tool runs in its own process; its output is copied verbatim into the report beside our
``metrics.json``.

    /tmp/venv-official/bin/pip install numpy==1.26.4 pandas==2.2.3 scikit-learn==1.5.2 \\
        tqdm pyyaml requests && /tmp/venv-official/bin/pip install --no-deps fschat==0.2.36
    .venv/bin/python scripts/official_checks.py \\
        --reference ../shared/reference/arena_hard_auto_v0.1 \\
        --tool-python /tmp/venv-official/bin/python --out results/official_checks.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "results" / "harness"

# alpaca_eval downloads df_gamed.csv from the hub; offline it gets the bundled copy of that file
ALPACA = """
import json, sys
import pandas as pd
from alpaca_eval.metrics import get_length_controlled_winrate, get_winrate, glm_winrate
glm_winrate.hf_hub_download = lambda *a, filename, **k: sys.argv[2]
rows = pd.DataFrame(json.load(open(sys.argv[1])))
print({k: round(float(v), 4) for k, v in get_winrate(rows).items()})
print(get_length_controlled_winrate(rows, save_weights_dir=None))
"""


def run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    text = done.stdout.strip()
    if done.returncode:
        text += f"\n[exit {done.returncode}] " + done.stderr.strip().splitlines()[-1]
    return text


def block(title: str, text: str) -> list[str]:
    return [f"**{title}**", "", "```", text, "```", ""]


def arena_hard(folder: Path, reference: Path, python: str) -> list[str]:
    judges = [p.name for p in (folder / "model_judgment").iterdir() if p.is_dir()]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data" / "arena-hard-v0.1"
        data.mkdir(parents=True)
        (data / "model_answer").symlink_to(folder / "model_answer")
        (data / "model_judgment").symlink_to(folder / "model_judgment")
        for name in ("show_result.py", "utils.py", "utils_math.py"):
            (Path(tmp) / name).symlink_to(reference / name)
        for judge in judges:
            for flags in ([], ["--style-control"]):
                text = run([python, "show_result.py", "--judge-name", judge, *flags], Path(tmp))
                lines = [x for x in text.splitlines() if not x.startswith(("Turning", "100%"))]
                out += block(f"`show_result.py --judge-name {judge} {' '.join(flags)}`".replace(
                    " `", "`"), "\n".join(lines[-6:]))
    return out


def old_folds(annotations: Path) -> float:
    """Our LC on the folds of scikit-learn < 1.6."""
    import pandas as pd

    from metajudge.analysis import length_controlled_winrate

    frame = pd.DataFrame(json.loads(annotations.read_text()))
    return length_controlled_winrate(frame, fold_scheme="sklearn<1.6").length_controlled_winrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, type=Path,
                        help="arena-hard-auto v0.1's show_result.py, utils.py, utils_math.py")
    parser.add_argument("--tool-python", required=True,
                        help="Python with the tools' own environment (scikit-learn 1.5.2, fschat)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "official_checks.md")
    args = parser.parse_args()
    reference = args.reference.resolve()
    lines = ["# The official tools on results/harness", "",
             f"Made by `python scripts/official_checks.py --reference {args.reference} "
             "--tool-python …` (see its docstring for the environments). Each block is what "
             "the tool printed, beside our `metrics.json`.", ""]
    for folder in sorted((HARNESS / "arena_hard").iterdir()):
        if not (folder / "model_judgment").is_dir():
            continue
        ours = json.loads((folder / "metrics.json").read_text())
        lines += [f"## Arena-Hard: {folder.name}", "",
                  f"Ours (`metrics.json`): score {ours['score']:.2f} "
                  f"[{ours['lower']:.2f}, {ours['upper']:.2f}], style-controlled "
                  + (f"{ours['style_score']:.2f} [{ours['style_lower']:.2f}, "
                     f"{ours['style_upper']:.2f}]" if ours.get("style_score") is not None
                     else "none (every style feature constant)")
                  + f", avg_tokens {ours.get('avg_tokens')}", ""]
        lines += arena_hard(folder, reference, args.tool_python)
    for folder in sorted((HARNESS / "mt_bench").iterdir()):
        for judged in sorted((folder / "model_judgment").glob("*_single.jsonl")):
            ours = json.loads((folder / "metrics.json").read_text())
            lines += [f"## MT-Bench: {folder.name}", "",
                      "Ours (`metrics.json`): " + ", ".join(
                          f"{k} {ours.get(k)}" for k in ("score", "turn_1", "turn_2",
                                                         "no_rating", "score_with_readouts",
                                                         "forced")), ""]
            lines += block("`python -m fastchat.llm_judge.show_result --mode single "
                           f"--input-file {judged.relative_to(ROOT)}`",
                           run([args.tool_python, "-m", "fastchat.llm_judge.show_result",
                                "--mode", "single", "--bench-name", "mt_bench",
                                "--input-file", str(judged)]))
    from metajudge.analysis import gamed_baselines_path

    gamed = str(gamed_baselines_path())
    for folder in sorted((HARNESS / "alpaca_eval").iterdir()):
        annotations = folder / "annotations.json"
        if not annotations.is_file():
            continue
        ours = json.loads((folder / "metrics.json").read_text())
        lines += [f"## AlpacaEval: {folder.name}", "",
                  f"Ours (`metrics.json`, fold scheme {ours.get('fold_scheme')}): win rate "
                  f"{ours['win_rate']:.4f} ± {ours['standard_error']:.4f}, LC "
                  f"{ours['length_controlled_winrate']:.4f}, n_wins {ours['n_wins']}, "
                  f"n_wins_base {ours['n_wins_base']}, n_draws {ours['n_draws']}; "
                  "LC with the other fold scheme (`--fold-scheme 'sklearn<1.6'`): "
                  f"{old_folds(annotations):.4f}", ""]
        lines += block("alpaca-eval 0.6.6 `get_winrate`, `get_length_controlled_winrate` "
                       f"(scikit-learn of `{Path(sys.executable).parent.parent.name}`)",
                       run([sys.executable, "-c", ALPACA, str(annotations), gamed]))
        lines += block("the same with scikit-learn 1.5.2 (`--tool-python`)",
                       run([args.tool_python, "-c", ALPACA, str(annotations), gamed]))
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""AlpacaEval with alpaca_eval's own annotators: ``metajudge eval alpaca-eval --annotator NAME``.

The model's answers come from the harness (``model_outputs.json``, AlpacaEval's layout); the
annotations are made by one of alpaca_eval's annotator configs (e.g.
``weighted_alpaca_eval_gpt4_turbo``, the AlpacaEval 2 judge) or any config of the user's, through
alpaca_eval's Python API (``PairwiseAnnotator.annotate_head2head``: its prompts, its position
randomisation, its parser, its cache). ``--annotator-model`` replaces the config's model name and
``--annotator-url`` points its OpenAI client at any OpenAI-compatible server (a vLLM server of an
open judge, or a local test server): the client settings go to a temporary client-config file, so
no key is ever written to the output folder. The reference outputs are the bundled
``gpt4_1106_preview`` ones, so nothing is fetched from a hub; the metrics (win rate, LC win rate)
are computed here from the annotations alpaca_eval returns (``alpaca_eval_annotations.json``,
and ``annotations.json`` for the metrics and ``--rescore``).

    metajudge eval alpaca-eval --model M --annotator weighted_alpaca_eval_gpt4_turbo --out DIR
    metajudge eval alpaca-eval --model M --annotator my_judge/configs.yaml \\
        --annotator-model /models/llama-3-70b --annotator-url http://node3:8000/v1 --out DIR
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from metajudge.backends.base import Backend
from metajudge.evaluation.alpaca_eval import annotation_metrics, item_id
from metajudge.evaluation.benchmarks import ALPACA_EVAL_BASELINE, alpaca_eval_items
from metajudge.evaluation.generation import generate_outputs
from metajudge.extras import require
from metajudge.store import Store

log = logging.getLogger(__name__)


def annotator_config(name: str) -> tuple[Path, str, dict[str, Any]]:
    """(config file, annotator name, its settings) for a config of alpaca_eval's or a file."""
    path = Path(name)
    if path.is_dir():
        path = path / "configs.yaml"
    if not path.is_file():
        ae = require("alpaca_eval", "alpaca-eval")
        path = Path(str(ae.__file__)).parent / "evaluators_configs" / name / "configs.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"annotator {name!r}: neither a configs.yaml nor one of "
                                    "alpaca_eval's evaluators_configs")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError(f"{path}: an annotator config holds one annotator, got {list(data)}")
    (annotator, settings), = data.items()
    return path, str(annotator), settings


def run_official_annotator(
    store: Store, model: Backend, *, annotator: str, annotator_model: str | None = None,
    annotator_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
    limit: int | None = None, bootstrap_rounds: int = 1000, progress: bool = True,
    fold_scheme: str = "sklearn>=1.6",
) -> dict[str, object]:
    """Answer with ``model``, annotate with alpaca_eval's annotator, score; returns the metrics."""
    require("alpaca_eval", "alpaca-eval")
    from alpaca_eval.annotators import PairwiseAnnotator

    config = store.config
    items = alpaca_eval_items()[:limit]
    outputs = generate_outputs(store, model, [(item_id(i.index), i.instruction) for i in items],
                               progress=progress)
    answered = [i for i in items if item_id(i.index) in outputs]
    model_outputs = [{"instruction": i.instruction, "output": outputs[item_id(i.index)].output,
                      "generator": config.name, "dataset": i.dataset} for i in answered]
    store.write_json("model_outputs.json", model_outputs)
    reference = [{"instruction": i.instruction, "output": i.reference,
                  "generator": ALPACA_EVAL_BASELINE, "dataset": i.dataset} for i in answered]
    source, name, settings = annotator_config(annotator)
    folder = store.root / "annotator"
    folder.mkdir(exist_ok=True)
    completions = dict(settings.get("completions_kwargs", {}))
    if annotator_model:
        completions["model_name"] = annotator_model
    template = settings.get("prompt_template")
    if template and not Path(template).is_absolute():
        template = str((source.parent.parent / template).resolve()) if not (
            source.parent / template).is_file() else str((source.parent / template).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        if annotator_url:  # the client of alpaca_eval's openai decoder, pointed at the server
            key = os.environ.get(api_key_env or "", "") or "EMPTY"
            clients = Path(tmp) / "clients.yaml"
            clients.write_text(yaml.safe_dump({"default": [{"api_key": key,
                                                            "base_url": annotator_url}]}))
            completions["client_config_path"] = str(clients)
        ours = {name: {**settings, "prompt_template": template,
                       "completions_kwargs": completions}}
        (folder / "configs.yaml").write_text(yaml.safe_dump(
            {name: {**ours[name], "completions_kwargs": {
                k: v for k, v in completions.items() if k != "client_config_path"}}},
            sort_keys=False))
        run_config = Path(tmp) / "configs.yaml"
        run_config.write_text(yaml.safe_dump(ours, sort_keys=False))
        annotating = PairwiseAnnotator(annotators_config=str(run_config), seed=config.seed,
                                       caching_path=str(folder / "cache.json"))
        annotations = annotating.annotate_head2head(outputs_1=reference, outputs_2=model_outputs)
    frame = pd.DataFrame(annotations).rename(columns={
        "preference_raw_completion": "raw_completion"})
    by_instruction = {i.instruction: i.index for i in answered}
    frame["index"] = frame["instruction"].map(by_instruction)
    frame = frame.sort_values("index").reset_index(drop=True)
    store.write_json("alpaca_eval_annotations.json", annotations)
    store.write_json("annotations.json", frame.to_dict(orient="records"))
    metrics = annotation_metrics(frame, bootstrap_rounds=bootstrap_rounds, seed=config.seed,
                                 fold_scheme=fold_scheme)
    metrics.update(annotator=f"alpaca_eval:{name}" + (f"/{annotator_model}"
                                                      if annotator_model else ""),
                   items=len(items), answered=len(answered), judged=len(frame))
    store.write_json("metrics.json", metrics)
    return metrics

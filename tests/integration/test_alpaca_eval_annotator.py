"""alpaca_eval's own annotator machinery on the harness's outputs, its OpenAI client pointed at a
real `transformers serve` on 127.0.0.1 (no key, no network): issue 17, item 6."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metajudge.backends.serving import free_port, wait_healthy
from metajudge.cli import main
from metajudge.processes import Child

pytest.importorskip("alpaca_eval", reason="needs metajudge[alpaca-eval]")

CONFIG = """\
smollm2_judge:
  prompt_template: "alpaca_eval_gpt4/alpaca_eval.txt"
  fn_completions: "openai_completions"
  completions_kwargs:
    model_name: "MODEL"
    max_tokens: 24
    temperature: 0
    requires_chatml: true
  fn_completion_parser: "regex_parser"
  completion_parser_kwargs:
    outputs_to_match:
      1: '(?i)output \\(a\\)'
      2: '(?i)output \\(b\\)'
  batch_size: 1
"""


def test_alpaca_eval_annotator_through_its_api(tmp_path: Path, embedded_model_dir: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import alpaca_eval

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    templates = Path(alpaca_eval.__file__).parent / "evaluators_configs"
    config = tmp_path / "judge" / "configs.yaml"
    config.parent.mkdir()
    config.write_text(CONFIG.replace("MODEL", embedded_model_dir).replace(
        '"alpaca_eval_gpt4/', f'"{templates}/alpaca_eval_gpt4/'))
    port = free_port()
    server = Child.start([str(Path(sys.executable).parent / "transformers"), "serve",
                          embedded_model_dir, "--host", "127.0.0.1", "--port", str(port),
                          "--device", "cpu"], log=tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}/v1"
    out = tmp_path / "ae"
    try:
        wait_healthy([server], [url], 300)
        assert main(["eval", "alpaca-eval", "--model", "smollm2-135m-instruct", "--limit", "2",
                     "--out", str(out), "--no-progress", "--bootstrap", "0",
                     "--set", "generation.max_tokens=24", "--annotator", str(config),
                     "--annotator-url", url]) == 0
    finally:
        server.stop()
    annotations = json.loads((out / "annotations.json").read_text())
    assert len(annotations) == 2
    for row in annotations:  # alpaca_eval's own fields, its annotator named
        assert {"instruction", "output_1", "output_2", "generator_1", "generator_2",
                "annotator", "preference"} <= set(row)
        assert row["annotator"] == "smollm2_judge"
        assert row["generator_1"] == "gpt4_1106_preview" and row["generator_2"] == \
            "smollm2-135m-instruct"
    # alpaca_eval's client asked the local server for every annotation
    assert (tmp_path / "server.log").read_text().count("Request received") == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["annotator"] == "alpaca_eval:smollm2_judge"
    assert (metrics["n_total"] or 0) + metrics["no_verdict"] == 2
    assert "api_key" not in (out / "annotator" / "configs.yaml").read_text()
    assert (out / "annotator" / "cache.json").is_file()  # alpaca_eval's cache: a rerun reuses it

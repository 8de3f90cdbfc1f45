"""The run config: SPEC defaults, overrides, validation, and what is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metajudge.config import RunConfig, load_config, scheduled
from metajudge.store import ConfigMismatchError, Store

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_papers() -> None:
    c = RunConfig()
    assert c.iterations == 4
    assert (c.prompts.per_iteration, c.prompts.pool_size) == (5000, 20000)
    assert c.generation.samples_per_prompt == 7
    assert (c.generation.temperature, c.generation.top_p) == (0.8, 0.95)
    assert c.judge.judgments_per_response == 11
    assert c.pairs.rho == [0.0, 0.32, 0.32, 0.4]
    assert c.pairs.first_iteration_max_chosen_chars == 2500
    assert c.pairs.judge_max_chosen_chars == [1100, 1000]
    assert c.pairs.pair_types == [["actor", "judge"], ["actor", "judge"], ["actor"], ["actor"]]
    assert (c.training.beta, c.training.learning_rate) == (0.1, 5e-6)
    assert (c.training.lr_scheduler, c.training.global_batch_size) == ("cosine", 32)
    assert c.judge.forced_readout is False
    assert c.backend.trust_remote_code is False


def test_tiny_config_loads_and_overrides_apply() -> None:
    c = load_config(ROOT / "configs" / "tiny.yaml",
                    ["generation.samples_per_prompt=2", "pairs.rho=[0, 0.5]",
                     "backend.kind=openai"])
    assert c.generation.samples_per_prompt == 2
    assert c.pairs.rho == [0, 0.5]
    assert c.backend.kind == "openai"
    assert c.judge.forced_readout is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("generation.sample_per_prompt=3", "Did you mean 'generation.samples_per_prompt'"),
        ("backend.kind=tensorrt", "invalid config"),
        ("pairs.rho=[1.5]", "[0, 1]"),
        ("prompts.per_iteration=30000", "pool_size"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_schedule_repeats_last_value() -> None:
    assert [scheduled([0.0, 0.32, 0.4], t) for t in (1, 2, 3, 4, 5)] == [0, .32, .4, .4, .4]


def test_run_dir_saves_resolved_config_without_secrets(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-be-saved")
    config = load_config(None, ["backend.kind=openai"])
    store = Store.open(tmp_path / "run", config)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "sk-should-not-be-saved" not in saved
    assert RunConfig.model_validate(yaml.safe_load(saved)) == config
    assert store.manifest()["stages"] == {}


def test_reopening_with_a_record_shaping_change_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path, load_config(None)).close()
    Store.open(tmp_path, load_config(None, ["judge.judgments_per_response=3"])).close()  # fine
    with pytest.raises(ConfigMismatchError, match="generation"):
        Store.open(tmp_path, load_config(None, ["generation.temperature=0.1"]))
    assert Store.open(tmp_path, lock=False).config.judge.judgments_per_response == 3


def test_paper_config_is_the_spec() -> None:
    c = load_config(ROOT / "configs" / "paper.yaml")
    assert c.backend.kind == "openai" and c.iterations == 4
    # served: vllm serve over the node's 8 GPUs; DPO: accelerate + ZeRO-3 on the same 8
    assert c.backend.serve is not None and c.backend.serve.engine == "vllm"
    assert c.backend.serve.data_parallel_size == 8
    assert (c.training.launcher, c.training.num_processes, c.training.accelerate_config) == (
        "accelerate", 8, "zero3")
    assert c.training.per_device_batch_size * c.training.accumulation * 8 == 32
    assert (c.generation.samples_per_prompt, c.judge.judgments_per_response) == (7, 11)
    assert (c.prompts.per_iteration, c.prompts.pool_size) == (5000, 20000)
    assert c.judge.forced_readout is False and c.meta_judge.forced_readout is False
    assert c.pairs == RunConfig().pairs
    assert (c.training.beta, c.training.learning_rate, c.training.global_batch_size) == (
        0.1, 5e-6, 32)

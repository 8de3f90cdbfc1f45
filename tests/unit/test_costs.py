"""`metajudge run CONFIG --dry-run`: projected requests, calls and tokens at the paper's scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.costs import project_costs

ROOT = Path(__file__).resolve().parents[2]


def test_paper_scale_projection() -> None:
    table = project_costs(load_config(ROOT / "configs" / "paper.yaml"))
    rows = table.set_index(["iteration", "stage"])
    # P = 5,000 prompts, K = 7, N = 11 (SPEC §1-§5)
    assert rows.loc[(1, "generate"), "requests"] == 35_000
    assert rows.loc[(1, "judge"), "requests"] == 385_000
    assert rows.loc[(1, "meta-judge"), "requests"] == 5_000 * 11 * 10
    assert (3, "meta-judge") not in rows.index  # iterations 3-4 train on actor pairs only
    assert rows.loc[(1, "generate"), "generated_tokens_max"] == 35_000 * 2048
    assert rows.loc[(1, "train"), "optimizer_steps_max"] == 313  # 10,000 pairs / 32
    assert rows.loc[(4, "train"), "dpo_pairs_max"] == 5_000


def test_backend_calls_follow_the_engines_batches() -> None:
    # tiny: 96 judgments; in-process transformers takes each batch of 32 through its read-out
    # before the next (3 x 2 calls); a served engine gets the whole chunk (1 x 2)
    tiny = load_config(ROOT / "configs" / "tiny.yaml")
    rows = project_costs(tiny).set_index(["iteration", "stage"])
    assert rows.loc[(1, "judge"), "backend_calls"] == 6
    served = load_config(ROOT / "configs" / "tiny.yaml", ["backend.kind=openai"])
    assert project_costs(served).set_index(["iteration", "stage"]).loc[
        (1, "judge"), "backend_calls"] == 2


def test_dry_run_prints_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(ROOT / "configs" / "paper.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "meta-judge" in out and "total over all iterations" in out
    assert list(tmp_path.iterdir()) == []


def test_hours_follow_the_throughput_and_the_replicas() -> None:
    config = load_config(ROOT / "configs" / "paper.yaml")
    one = project_costs(config, tokens_per_second=1000.0).set_index(["iteration", "stage"])
    # no calibration: half the bound, 35,000 responses x 1,024 tokens at 1,000 tokens/s
    assert one.loc[(1, "generate"), "hours_est"] == round(35_000 * 1024 / 1000 / 3600, 2)
    served = config.model_copy(update={"backend": config.backend.model_copy(update={
        "kind": "openai", "serve": None, "openai": config.backend.openai.model_copy(update={
            "base_url": [f"http://node{k}:8000/v1" for k in range(4)]})})})
    four = project_costs(served, tokens_per_second=1000.0).set_index(["iteration", "stage"])
    assert four.loc[(1, "judge"), "hours_est"] == pytest.approx(
        one.loc[(1, "judge"), "hours_est"] / 4, abs=0.01)


def test_training_memory_table_for_an_8b_model() -> None:
    from metajudge.costs import training_memory

    paper = ROOT / "configs" / "paper.yaml"
    table = training_memory(load_config(paper, ["training.precompute_ref_log_probs=false"]),
                            "8x80")
    # 8.03e9 parameters: 16 bytes of fp32 weights, gradients and Adam + 4 of the reference,
    # which TRL loads like the policy (fp32)
    assert table.loc["full DPO, 1 GPU", "states_gb_per_gpu"] == pytest.approx(160.6, abs=0.1)
    assert not table.loc["full DPO, 1 GPU", "fits"]
    # ZeRO-3 in bf16: bf16 module 2 + fp32 master 4 + Adam 8 + fp32 gradient accumulation 4
    # (the shipped zero3.json's data_types) + the bf16 reference 2 = 20 bytes, over 8 GPUs
    zero3 = table.loc["DPO ZeRO-3 over 8 GPUs"]
    assert zero3["states_gb_per_gpu"] == pytest.approx(20.1, abs=0.1)
    assert (zero3["grad_accum"], zero3["grad_accum_gb_per_gpu"]) == ("fp32", pytest.approx(
        4.0, abs=0.1))
    # the EFT seed stage's SFT: no reference
    assert table.loc["EFT SFT, 1 GPU", "states_gb_per_gpu"] == pytest.approx(128.5, abs=0.1)
    assert table.loc["EFT SFT ZeRO-3 over 8 GPUs", "states_gb_per_gpu"] == pytest.approx(
        18.1, abs=0.1)
    assert table["fits"].tolist() == [False, True, True, True, False, True]
    # QLoRA: NF4 linear layers, bf16 embeddings and head (~13 % of Llama-3-8B), fp32 adapters
    assert table.loc["QLoRA, 1 GPU", "states_gb_per_gpu"] == pytest.approx(6.5, abs=0.1)
    assert training_memory(load_config(paper), "1x24").loc["LoRA, 1 GPU", "fits"]
    # precomputed reference log-probabilities: no reference model kept
    assert training_memory(load_config(paper), "8x80").loc[
        "full DPO, 1 GPU", "states_gb_per_gpu"] == pytest.approx(128.5, abs=0.1)
    with pytest.raises(ValueError, match="COUNTxGB"):
        training_memory(load_config(None), "eight")


def test_zero3_accumulation_memory_follows_the_deepspeed_json(tmp_path: Path) -> None:
    """A ZeRO-3 config whose DeepSpeed JSON names no data_types accumulates in the model's bf16
    (DeepSpeed 0.19.8's get_data_types): 2 bytes a parameter instead of 4."""
    import json

    import yaml

    from metajudge.costs import training_memory
    from metajudge.stages.train import accelerate_config

    shipped = accelerate_config("zero3")
    ds = json.loads((shipped.parent / "zero3.json").read_text())
    del ds["data_types"]
    (tmp_path / "zero3.json").write_text(json.dumps(ds))
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump(yaml.safe_load(shipped.read_text())))
    config = load_config(ROOT / "configs" / "paper.yaml",
                         [f"training.accelerate_config={tmp_path / 'zero3.yaml'}"])
    row = training_memory(config, "8x80").loc["DPO ZeRO-3 over 8 GPUs"]
    assert (row["grad_accum"], row["states_gb_per_gpu"]) == ("bf16", pytest.approx(16.1, abs=0.1))


def test_decoder_parameter_count_from_config(embedded_model_dir: str) -> None:
    import json

    from metajudge.costs import decoder_params

    cfg = json.loads((Path(embedded_model_dir) / "config.json").read_text())
    assert decoder_params(cfg) == pytest.approx(134_515_008, rel=0.01)  # SmolLM2-135M


def test_self_rewarding_baseline_makes_no_meta_judge_requests(capsys: pytest.CaptureFixture
                                                              ) -> None:
    config = load_config(ROOT / "configs" / "self_rewarding.yaml")
    paper = load_config(ROOT / "configs" / "paper.yaml")
    assert config.pairs.pair_types == [["actor"]] * 4
    assert config.pairs.rho == paper.pairs.rho  # the paper's length control
    assert config.model_dump(exclude={"pairs"}) == paper.model_dump(exclude={"pairs"})
    table = project_costs(config)
    assert "meta-judge" not in set(table["stage"])
    assert table.loc[table["stage"] == "train", "dpo_pairs_max"].tolist() == [5_000] * 4
    assert main(["run", str(ROOT / "configs" / "self_rewarding.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "meta-judge" not in out and "judge" in out


def test_the_meta_judge_audit_counts_the_full_selection_s_comparisons() -> None:
    # review-28: with judge.adaptive an audited prompt's meta-judge audit also compares every
    # ordered pair of the full selection's response. paper.yaml: 1,100,000 meta-judge requests
    # over its iterations in full; adaptive share 0.57 (the default), audit 5 %:
    # 1,100,000 × (0.57 + 0.05 × 0.43 + 0.05) = 705,650
    config = load_config(ROOT / "configs" / "paper.yaml", [
        "judge.adaptive=true", "meta_judge.adaptive=true", "judge.audit_share=0.05",
        "meta_judge.audit_share=0.05"])
    frame = project_costs(config)
    assert frame[frame["stage"] == "meta-judge"]["requests"].sum() == 705_650
    assert "full selection" in frame.attrs["adaptive"]
    # without judge.adaptive the selection is the full one: 1,100,000 × (0.57 + 0.05 × 0.43)
    config = load_config(ROOT / "configs" / "paper.yaml", [
        "meta_judge.adaptive=true", "meta_judge.audit_share=0.05"])
    frame = project_costs(config)
    assert frame[frame["stage"] == "meta-judge"]["requests"].sum() == 650_650


def test_an_inline_zero3_config_accumulates_in_bf16_in_the_table(tmp_path: Path) -> None:
    """An accelerate config with its ZeRO-3 settings inline (no deepspeed_config_file) cannot
    pass data_types to DeepSpeed, so it sums gradients in bf16: the table must say so, not show
    the shipped zero3.json's fp32 (it did: 4.0 GB of fp32 accumulation)."""
    import yaml

    from metajudge.costs import training_memory
    from metajudge.stages.train import accelerate_config

    raw = yaml.safe_load(accelerate_config("zero3").read_text())
    raw["deepspeed_config"] = {"zero_stage": 3, "zero3_init_flag": True,
                               "zero3_save_16bit_model": True}
    (tmp_path / "inline.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(ROOT / "configs" / "paper.yaml",
                         [f"training.accelerate_config={tmp_path / 'inline.yaml'}"])
    table = training_memory(config, "8x80")
    for setup in ("DPO ZeRO-3 over 8 GPUs", "EFT SFT ZeRO-3 over 8 GPUs"):
        assert table.loc[setup, "grad_accum"] == "bf16", setup
    assert table.loc["EFT SFT ZeRO-3 over 8 GPUs", "states_gb_per_gpu"] == pytest.approx(
        16.1, abs=0.1)  # (2 + 4 + 8 + 2)·P / 8

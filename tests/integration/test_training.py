"""`metajudge train` on the embedded model: torchrun with 2 ranks against one process with
accumulation, LoRA merged into a full checkpoint, fp32 master weights at lr 5e-6 (and for LoRA
and QLoRA adapters), a pair TRL drops, and the loop counting a training once. Kill -9 during a
launched job (issue 14) is in test_zero3.py, on DeepSpeed ZeRO-3's 2 ranks."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.records import DPORow, Message
from metajudge.store import DPO_PAIRS, Store

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [("Name a colour.", "Blue.", "I refuse to answer questions about colours."),
         ("What is 2 + 2?", "2 + 2 = 4.", "It is 5, obviously."),
         ("Say hello in French.", "Bonjour !", "Hello."),
         ("Name a planet.", "Mars.", "The sun is a planet.")]


def make_run(path: Path, *overrides: str, pairs: list[tuple[str, str, str]] = PAIRS) -> Path:
    """A run directory whose iteration 1 has four preference pairs (or ``pairs``) to train on."""
    config = load_config(ROOT / "configs" / "tiny.yaml", [
        "training.per_device_batch_size=1", "training.global_batch_size=2",
        "training.data_order=sequential", "training.learning_rate=1e-4", *overrides])
    store = Store.open(path, config)
    store.write_all(DPO_PAIRS, [DPORow(
        prompt=(Message(role="user", content=q),),
        chosen=(Message(role="assistant", content=good),),
        rejected=(Message(role="assistant", content=bad),), pair_type="actor",
        id=f"actor:p{k}", iteration=1, prompt_id=f"p{k}", chosen_id=f"p{k}#0",
        rejected_id=f"p{k}#1", chosen_score=4.0, rejected_score=1.0)
        for k, (q, good, bad) in enumerate(pairs)], 1)
    store.close()
    return path


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "iter_01" / "train_metrics.jsonl")
            .read_text().splitlines()]


@pytest.mark.timeout(900)
def test_torchrun_two_ranks_give_the_losses_of_one_process_with_accumulation(
        tmp_path: Path, embedded_model_dir: str) -> None:
    ranks = make_run(tmp_path / "ranks", "training.launcher=torchrun",
                     "training.num_processes=2")
    single = make_run(tmp_path / "single")
    assert main(["train", str(ranks), "--no-progress"]) == 0
    assert main(["train", str(single), "--no-progress"]) == 0
    entry = json.loads((ranks / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert (entry["launcher"], entry["world_size"], entry["per_device_batch_size"],
            entry["gradient_accumulation"], entry["global_batch_size"]) == ("torchrun", 2, 1,
                                                                            1, 2)
    one = json.loads((single / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert (one["world_size"], one["gradient_accumulation"], one["global_batch_size"]) == (
        1, 2, 2)
    # the engine as accelerate reported it: DDP over CPU processes, against one process
    assert (entry["distributed_type"], one["distributed_type"]) == ("MULTI_CPU", "NO")
    assert len(losses(ranks)) == len(losses(single)) == 2
    assert losses(ranks) == pytest.approx(losses(single), rel=1e-4, abs=1e-5)
    assert losses(ranks)[1] != pytest.approx(losses(ranks)[0])  # the first step moved it
    a = load_file(str(ranks / "iter_01" / "checkpoint" / "model.safetensors"))
    b = load_file(str(single / "iter_01" / "checkpoint" / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(a[name], b[name], atol=1e-5)


@pytest.mark.timeout(300)
def test_training_shows_no_deprecation_warning(tmp_path: Path) -> None:
    # transformers 5.20+ warns for `gradient_checkpointing` (a TrainingArguments field TRL's
    # configs default to True) and for `is_gradient_checkpointing` (read by TRL's DPO around
    # each reference forward); DPO and the EFT's SFT train on the 6 M llama3-mini (seconds)
    from metajudge.training.sft import train_sft

    run = make_run(tmp_path / "dpo", "backend.model=llama3-mini", "training.max_length=64",
                   pairs=PAIRS[:2])
    config = load_config(None, ["backend.model=llama3-mini", "eft.max_length=64"])
    rows = [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": good}]} for q, good, _ in PAIRS[:2]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(run), "--no-progress"]) == 0
        sft = train_sft("llama3-mini", rows, tmp_path / "sft", config, progress=False)
    assert sft["steps"] >= 1
    assert [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, FutureWarning | DeprecationWarning)] == []


def test_a_batch_that_cannot_be_split_exactly_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not a multiple of 3 × 2 = 6"):
        load_config(None, ["training.per_device_batch_size=3", "training.num_processes=2",
                           "training.launcher=torchrun"])


@pytest.mark.slow  # CI's time goes to the paper miniature; LoRA's merge under ZeRO-3 stays
@pytest.mark.timeout(900)
def test_lora_merges_into_a_full_checkpoint_with_m_t_as_reference(
        tmp_path: Path, embedded_model_dir: str) -> None:
    lora = make_run(tmp_path / "lora", "training.precompute_ref_log_probs=true",
                    "training.lora={r: 8, alpha: 16, dropout: 0.0, "
                    "target_modules: [q_proj, v_proj]}")
    full = make_run(tmp_path / "full", "training.precompute_ref_log_probs=true")
    assert main(["train", str(lora), "--no-progress"]) == 0
    assert main(["train", str(full), "--no-progress"]) == 0
    checkpoint = lora / "iter_01" / "checkpoint"
    assert not (checkpoint / "adapter_config.json").exists()
    merged = load_file(str(checkpoint / "model.safetensors"))
    base = load_file(str(Path(embedded_model_dir) / "model.safetensors"))
    assert set(merged) == set(base)  # a plain model: no peft names
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    # the reference is M_t itself: the LoRA run's reference log-probabilities (adapter
    # disabled) equal the full run's (a copy of M_t)
    refs = [[json.loads(x) for x in (run / "iter_01" / "reference_logps.jsonl").read_text()
             .splitlines()] for run in (lora, full)]
    for a, b in zip(*refs, strict=True):
        assert a["chosen"] == pytest.approx(b["chosen"], abs=1e-4)
        assert a["rejected"] == pytest.approx(b["rejected"], abs=1e-4)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint))  # no peft needed
    assert not hasattr(model, "peft_config")


@pytest.mark.slow  # bf16 autocast is slow on a CPU; the check that refuses bf16 masters is
@pytest.mark.timeout(600)  # unit-tested, and ZeRO-3's fp32 masters are in test_zero3.py
def test_mixed_precision_keeps_fp32_master_weights_that_move_at_lr_5e_6(
        tmp_path: Path, embedded_model_dir: str) -> None:
    # the GPU path's dtype handling on this CPU: float32 weights, bf16 autocast
    run = make_run(tmp_path / "bf16", "training.mixed_precision=bf16",
                   "training.learning_rate=5e-6", "training.save_dtype=float32",
                   "training.global_batch_size=4")
    assert main(["train", str(run), "--no-progress"]) == 0
    meta = json.loads((run / "iter_01" / "checkpoint" / "metajudge.json").read_text())
    assert meta["mixed_precision"] == "bf16" and meta["steps"] == 1
    name = "model.layers.0.self_attn.q_proj.weight"
    before = load_file(str(Path(embedded_model_dir) / "model.safetensors"))[name]
    after = load_file(str(run / "iter_01" / "checkpoint" / "model.safetensors"))[name]
    moved = (after != before).float().mean().item()
    assert moved > 0.9  # Adam's first step moves every weight with a gradient by ~lr
    # the same update applied to bf16 weights rounds away for most of them
    in_bf16 = (before.bfloat16() + (after - before).bfloat16()) != before.bfloat16()
    assert in_bf16.float().mean().item() < 0.5
    from metajudge.training.dpo import check_master_weights

    with pytest.raises(ValueError, match="16-bit weights"):
        check_master_weights(torch.nn.Linear(2, 2).bfloat16(), deepspeed=False)


@pytest.mark.timeout(600)
def test_a_pair_whose_prompt_fills_max_length_is_dropped_by_name_not_misaligned(
        tmp_path: Path, embedded_model_dir: str) -> None:
    # TRL drops an example whose prompt reaches max_length; the reference log-probabilities of
    # the others must stay with their own pairs
    long = ("Summarise: " + "the quick brown fox jumps over the lazy dog " * 12,
            "A fox jumps.", "No.")
    pairs = [PAIRS[0], long, *PAIRS[1:]]
    run = make_run(tmp_path / "long", "training.precompute_ref_log_probs=true",
                   "training.max_length=64", "training.global_batch_size=4", pairs=pairs)
    assert main(["train", str(run), "--no-progress"]) == 0
    meta = json.loads((run / "iter_01" / "checkpoint" / "metajudge.json").read_text())
    assert (meta["pairs"], meta["pairs_trained"], meta["pairs_dropped"]) == (5, 4, ["actor:p1"])
    refs = [json.loads(x) for x in (run / "iter_01" / "reference_logps.jsonl").read_text()
            .splitlines()]
    assert [r["id"] for r in refs] == [f"actor:p{k}" for k in range(5)]
    assert refs[1]["chosen"] is None and "max_length" in refs[1]["dropped"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from metajudge.training.dpo import sequence_logprob

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    for ref, (question, good, bad) in zip(refs, pairs, strict=True):
        if ref["chosen"] is None:
            continue
        prompt = [{"role": "user", "content": question}]
        assert ref["chosen"] == pytest.approx(sequence_logprob(model, tokenizer, prompt, good),
                                              abs=0.05)
        assert ref["rejected"] == pytest.approx(sequence_logprob(model, tokenizer, prompt, bad),
                                                abs=0.05)


@pytest.mark.timeout(600)
def test_lora_with_bf16_loads_its_base_in_bf16_and_trains_fp32_adapters(
        tmp_path: Path, embedded_model_dir: str) -> None:
    # what the README's memory table counts: a 2-byte frozen base, 4-byte adapters
    run = make_run(tmp_path / "lora16", "training.mixed_precision=bf16",
                   "training.global_batch_size=4", "training.learning_rate=1e-3",
                   "training.lora={r: 8, alpha: 16, dropout: 0.0, "
                   "target_modules: [q_proj, v_proj]}")
    assert main(["train", str(run), "--no-progress"]) == 0
    meta = json.loads((run / "iter_01" / "checkpoint" / "metajudge.json").read_text())
    assert meta["engine"]["mixed_precision"] == "bf16" and meta["steps"] == 1
    assert (meta["engine"]["frozen_dtype"], meta["engine"]["trainable_dtype"]) == (
        "bfloat16", "float32")
    merged = load_file(str(run / "iter_01" / "checkpoint" / "model.safetensors"))
    base = load_file(str(Path(embedded_model_dir) / "model.safetensors"))
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[name], base[name].bfloat16())


@pytest.mark.timeout(900)
def test_the_loop_counts_training_once(tmp_path: Path, embedded_model_dir: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 22 item 5: the child `metajudge train` records the entry; nothing adds it again
    benchmarks = str(ROOT / "benchmarks")
    monkeypatch.setenv("PYTHONPATH", benchmarks + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = tmp_path / "loop"
    settings = ["backend.kind=instant_backend:InstantBackend", "prompts.per_iteration=2",
                "generation.samples_per_prompt=3", "judge.judgments_per_response=2",
                "runner.retry_delay_s=0", "pairs.pair_types=[[actor]]",
                "training.global_batch_size=2", "training.max_length=96"]
    args = ["run", str(ROOT / "configs" / "tiny.yaml"), "--iterations", "1", "--no-progress",
            "--out", str(run)]
    assert main(args + [w for s in settings for w in ("--set", s)]) == 0
    trained = json.loads((run / "iter_01" / "checkpoint" / "metajudge.json").read_text())
    entry = json.loads((run / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert entry["seconds"] == trained["seconds"] and entry["passes"] == 1
    import pandas as pd

    assert pd.read_csv(run / "summary.csv")["train_seconds"][0] == round(trained["seconds"], 1)
    # a later `metajudge train` on the finished iteration adds nothing either
    assert main(["train", str(run), "--iteration", "1", "--no-progress"]) == 0
    again = json.loads((run / "manifest.json").read_text())["stages"]["iter_01/train"]
    assert again["seconds"] == trained["seconds"] and again["passes"] == 1


def test_qlora_adapters_that_trl_casts_to_bf16_train_as_fp32_master_weights(
        embedded_model_dir: str) -> None:
    # TRL casts a quantized model's trainable adapters to bf16; they are cast back (peft's own
    # default for quantized models) so the fp32-master check holds for QLoRA too. bitsandbytes'
    # 4-bit layers need a GPU: here a bf16 base stands in for the frozen 4-bit one.
    import peft
    from transformers import AutoModelForCausalLM

    from metajudge.training.dpo import check_master_weights, upcast_trainable

    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.bfloat16)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj"]))
    for param in model.parameters():  # trl/trainer/dpo_trainer.py, `if _is_quantized_model`
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    with pytest.raises(ValueError, match="16-bit weights"):
        check_master_weights(model, deepspeed=False)
    assert upcast_trainable(model) == 2 * base.config.num_hidden_layers  # lora_A, lora_B
    check_master_weights(model, deepspeed=False)
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}


@pytest.mark.timeout(900)
def test_a_checkpoint_trained_from_other_pairs_or_settings_is_refused_until_redone(
        tmp_path: Path, embedded_model_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a finished checkpoint is reused only when it was trained from the pairs, M_t and the
    # shaping settings the run holds now; --redo moves it aside and trains again
    run = make_run(tmp_path / "run", "training.max_length=96")
    assert main(["train", str(run), "--no-progress"]) == 0
    marker = run / "iter_01" / "checkpoint" / "metajudge.json"
    first = json.loads(marker.read_text())
    assert first["made_from"]["model"].startswith("smollm2-135m-instruct@")  # + content hash
    assert first["made_from"]["model"] != "smollm2-135m-instruct@None"
    assert first["made_from"]["training"]["beta"] == 0.1
    assert "launcher" not in first["made_from"]["training"]  # how it ran is not what it is
    # unchanged: reused; another launch set-up: reused
    assert main(["train", str(run), "--no-progress", "--set", "training.num_processes=1",
                 "--set", "training.per_device_batch_size=2"]) == 0
    assert json.loads(marker.read_text()) == first
    # another beta: refused by name, and the run's settings are not replaced
    capsys.readouterr()
    assert main(["train", str(run), "--no-progress", "--set", "training.beta=0.2"]) == 2
    assert "training.beta" in capsys.readouterr().err
    assert load_config(run / "config.yaml").training.beta == 0.1
    # the pairs remade (one fewer): refused by name
    store = Store.open(run)
    rows = store.read(DPO_PAIRS, 1)
    store.write_all(DPO_PAIRS, rows[:3], 1)
    store.close()
    assert main(["train", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dpo_pairs" in err and "--redo" in err
    # --redo trains again on the pairs the run holds now; the old checkpoint is kept aside
    assert main(["train", str(run), "--no-progress", "--redo"]) == 0
    again = json.loads(marker.read_text())
    assert again["pairs"] == 3 and again["made_from"]["dpo_pairs"] != first["made_from"][
        "dpo_pairs"]
    aside = list((run / "iter_01" / "replaced").glob("checkpoint-*/metajudge.json"))
    assert [json.loads(p.read_text())["pairs"] for p in aside] == [4]
    assert main(["train", str(run), "--no-progress"]) == 0  # and is reused from then on


@pytest.mark.timeout(300)
def test_training_keeps_the_warning_filters_others_installed(tmp_path: Path) -> None:
    # review of issue 30 C: the alias filter was a warnings.catch_warnings() around train_dpo,
    # which on exit restores the whole filter list as it was on entry, so filters that imports
    # made during training (TRL, accelerate: accelerate.scheduler ignores torch.optim.lr_scheduler
    # UserWarnings) vanished from the process afterwards. A fresh interpreter, so TRL is first
    # imported inside the training, as under `metajudge run`.
    import subprocess
    import sys

    run = make_run(tmp_path / "dpo", "backend.model=llama3-mini", "training.max_length=64",
                   pairs=PAIRS[:2])
    script = (
        "import sys, warnings\n"
        "from metajudge.cli import main\n"
        "assert 'accelerate.scheduler' not in sys.modules\n"
        f"assert main(['train', {str(run)!r}, '--no-progress']) == 0\n"
        "assert 'accelerate.scheduler' in sys.modules\n"
        "text = lambda r: getattr(r, 'pattern', r) or ''\n"
        "print([f[0] for f in warnings.filters if text(f[3]) == 'torch.optim.lr_scheduler'])\n"
        "print(any('is_gradient_checkpointing' in text(f[1]) for f in warnings.filters))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=280, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    # accelerate's filter kept, and ours gone once training ended
    assert done.stdout.splitlines()[-2:] == ["['ignore']", "False"]

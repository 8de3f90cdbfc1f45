"""The launched-training commands, the shipped accelerate configs and the set-ups refused before
anything starts, checked statically (FSDP through accelerate falls back to plain DDP on a CPU;
DeepSpeed ZeRO-3 runs for real in tests/integration/test_zero3.py)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.stages.train import accelerate_config, launch_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"),
                                            ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_load_in_accelerate(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = accelerate_config(name)
    assert path.resolve() == (ROOT / "configs" / "accelerate" / f"{name}.yaml").resolve()
    config = load_config_from_file(str(path))
    assert str(config.distributed_type).endswith(kind)
    raw = yaml.safe_load(path.read_text())
    if name == "zero3":
        # its DeepSpeed settings are in zero3.json (accelerate passes `data_types` only from a
        # file), and accelerate refuses a mixed_precision beside that file: the ranks set it
        assert config.mixed_precision is None
        assert raw["deepspeed_config"]["deepspeed_config_file"] == "zero3.json"
        ds = json.loads((path.parent / "zero3.json").read_text())
        assert ds["zero_optimization"]["stage"] == 3
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
        assert ds["data_types"] == {"grad_accum_dtype": "fp32"}  # not the model's bf16
        from accelerate.utils import DeepSpeedPlugin

        os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = str(path.parent / "zero3.json")
        try:  # what accelerate hands DeepSpeed
            plugin = DeepSpeedPlugin()
        finally:
            del os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"]
        assert plugin.zero_stage == 3 and plugin.zero3_save_16bit_model is True
        assert plugin.deepspeed_config["data_types"] == {"grad_accum_dtype": "fp32"}
    else:
        assert config.mixed_precision == "bf16"
    if name == "fsdp":
        assert raw["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_launch_commands(tmp_path: Path) -> None:
    torchrun = load_config(None, ["training.launcher=torchrun", "training.num_processes=8",
                                  "training.global_batch_size=32",
                                  "training.per_device_batch_size=1"]).training
    command = launch_command(tmp_path, 2, torchrun)
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=8"]
    assert command[-5:] == ["-m", "metajudge.stages.train", str(tmp_path), "--iteration", "2"]
    assert "--nnodes=1" in command and torchrun.accumulation == 4
    nodes = load_config(None, ["training.launcher=torchrun", "training.num_processes=16",
                               "training.num_machines=2", "training.global_batch_size=32",
                               "training.per_device_batch_size=1",
                               "training.rdzv_endpoint=node0:29500",
                               "training.launcher_prefix=srun --nodes=2 --ntasks-per-node=1"]
                        ).training
    shell = launch_command(tmp_path, 1, nodes)
    assert shell[:2] == ["bash", "-c"] and shell[2].startswith("srun --nodes=2")
    assert "--nproc_per_node=8" in shell[2] and "--rdzv_endpoint=node0:29500" in shell[2]
    zero3 = load_config(None, ["training.launcher=accelerate", "training.num_processes=8",
                               "training.accelerate_config=zero3",
                               "training.per_device_batch_size=4"]).training
    command = launch_command(tmp_path, 1, zero3)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert f"--config_file={accelerate_config('zero3')}" in command
    # the DeepSpeed JSON by its full path, wherever the launch runs
    json_file = (accelerate_config("zero3").parent / "zero3.json").resolve()
    assert f"--deepspeed_config_file={json_file}" in command and json_file.is_file()
    # EFT's SFT: the same launch, its ranks run the EFT stage's entry point
    sft = launch_command(tmp_path, None, zero3, False, module="metajudge.stages.eft")
    assert sft[:-4] == command[:-5]
    assert sft[-4:] == ["-m", "metajudge.stages.eft", str(tmp_path), "--no-progress"]
    assert "--num_processes=8" in command and zero3.accumulation == 1
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        launch_command(tmp_path, 1, nodes.model_copy(update={"rdzv_endpoint": None}))
    # accelerate over two machines: each machine's shell expands its own rank
    spread = zero3.model_copy(update={"num_processes": 16, "num_machines": 2,
                                      "per_device_batch_size": 2,
                                      "rdzv_endpoint": "node0:29500",
                                      "launcher_prefix": "srun --nodes=2 --ntasks-per-node=1"})
    shell = launch_command(tmp_path, 1, spread)
    assert shell[:2] == ["bash", "-c"]
    prefix, inner = shell[2].split(" bash -c ", 1)
    assert prefix == "srun --nodes=2 --ntasks-per-node=1"
    words = shlex.split(shlex.split(inner)[0])
    assert "--main_process_ip=node0" in words and "--main_process_port=29500" in words
    assert "--machine_rank=$SLURM_NODEID" in words and "--num_machines=2" in words
    ranked = subprocess.run(["bash", "-c", f"echo {shlex.split(inner)[0]}"],
                            env={"SLURM_NODEID": "1", "PATH": os.environ["PATH"]},
                            capture_output=True, text=True, check=True).stdout
    assert "--machine_rank=1 " in ranked  # what srun's shell on the second machine runs
    with pytest.raises(FileNotFoundError, match="shipped: ddp, fsdp, zero3"):
        accelerate_config("zero9")


def test_several_machines_without_a_launcher_prefix_are_refused_by_name() -> None:
    # the launcher would start this machine's ranks only, which wait for the others for ever
    spread = ["training.launcher=accelerate", "training.num_processes=16",
              "training.num_machines=2", "training.per_device_batch_size=1",
              "training.rdzv_endpoint=node0:29500"]
    for launcher in ("accelerate", "torchrun"):
        with pytest.raises(ValueError, match=r"training.num_machines 2 needs "
                           r"training.launcher_prefix"):
            load_config(None, [*spread, f"training.launcher={launcher}"])
    load_config(None, [*spread, "training.launcher_prefix=srun --nodes=2 --ntasks-per-node=1"])


def test_an_eft_batch_that_the_launched_ranks_cannot_split_is_refused() -> None:
    with pytest.raises(ValueError, match=r"eft.global_batch_size 6 .* 1 × 4 = 4"):
        load_config(None, ["training.launcher=accelerate", "training.num_processes=4",
                           "training.per_device_batch_size=1", "training.global_batch_size=8",
                           "eft.global_batch_size=6", "eft.per_device_batch_size=1"])


def test_inprocess_training_on_several_gpus_is_refused_before_any_stage(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers would wrap the model in nn.DataParallel, which TRL refuses, after the
    stages had run: refused up front by the loop, `train` and `eft`, naming the settings. (No
    GPU here: torch's count of visible GPUs is what is replaced.)"""
    import torch

    from metajudge.stages.train import check_training

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(ValueError, match=r"4 GPUs are visible .*training.launcher accelerate "
                       r"with training.num_processes 4 and training.accelerate_config zero3"):
        check_training(load_config(None).training)
    launched = load_config(None, ["training.launcher=accelerate", "training.num_processes=4",
                                  "training.per_device_batch_size=1",
                                  "training.accelerate_config=ddp"]).training
    check_training(launched)  # a launched job is the way
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "benchmarks") + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the instant backend, for the loop below
    try:
        out = tmp_path / "loop"
        assert main(["run", str(ROOT / "configs" / "tiny.yaml"), "--no-progress", "--out",
                     str(out), "--set", "backend.kind=instant_backend:InstantBackend"]) == 2
        assert "training.launcher inprocess" in capsys.readouterr().err
        assert not (out / "iter_01").exists()  # nothing generated first
        eft = tmp_path / "eft"
        assert main(["eft", "--ranked", str(ROOT / "tests" / "data" /
                                            "oasst_ranked_later_turns.jsonl"),
                     "--out", str(eft), "--config", str(ROOT / "configs" / "tiny.yaml"),
                     "--no-progress", "--set",
                     "backend.kind=instant_backend:InstantBackend"]) == 2
        assert "4 GPUs are visible" in capsys.readouterr().err
        assert not eft.exists()  # nothing judged first
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from tests.integration.test_training import make_run

    run = make_run(tmp_path / "run")
    assert main(["train", str(run), "--no-progress"]) == 2
    assert "4 GPUs are visible" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "iter_01").iterdir()) == ["dpo_pairs.jsonl"]


def test_torchrun_with_an_accelerate_config_is_refused_by_name() -> None:
    # torchrun never reads an accelerate config: zero3 with it trained plain DDP
    with pytest.raises(ValueError, match=r"training.accelerate_config zero3 .* training.launcher "
                       r"torchrun"):
        load_config(None, ["training.launcher=torchrun", "training.accelerate_config=zero3",
                           "training.num_processes=2", "training.per_device_batch_size=1"])
    assert load_config(ROOT / "configs" / "paper.yaml").training.launcher == "accelerate"


def test_qlora_without_a_gpu_is_refused_before_anything_starts(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    qlora = ["--set", "training.lora={qlora: true}"]
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "benchmarks") + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the instant backend, for the loop below
    try:
        out = tmp_path / "loop"
        assert main(["run", str(ROOT / "configs" / "tiny.yaml"), "--no-progress", "--out",
                     str(out), "--set", "backend.kind=instant_backend:InstantBackend",
                     *qlora]) == 2
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert "training.lora.qlora needs a CUDA GPU" in capsys.readouterr().err
    assert not (out / "iter_01").exists()  # nothing generated first
    # the train command: refused before it saves the settings or starts a trainer
    from tests.integration.test_training import make_run

    run = make_run(tmp_path / "run")
    saved = (run / "config.yaml").read_text()
    assert main(["train", str(run), "--no-progress", *qlora]) == 2
    assert "training.lora.qlora" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved
    assert sorted(p.name for p in (run / "iter_01").iterdir()) == ["dpo_pairs.jsonl"]


def test_a_zero3_config_that_saves_no_full_model_is_refused(tmp_path: Path) -> None:
    from metajudge.stages.train import check_training

    shipped = accelerate_config("zero3")
    ds = json.loads((shipped.parent / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    (tmp_path / "zero3.json").write_text(json.dumps(ds))  # read beside the accelerate config
    path = tmp_path / "zero3.yaml"
    path.write_text(shipped.read_text())
    cfg = load_config(None, ["training.launcher=accelerate", f"training.accelerate_config={path}",
                             "training.num_processes=2", "training.per_device_batch_size=1"])
    with pytest.raises(ValueError, match="zero3_save_16bit_model"):
        check_training(cfg.training)
    check_training(cfg.training.model_copy(update={"accelerate_config": "zero3"}))


def test_training_never_imports_the_stages() -> None:
    # the rank entry point lives in stages/train.py; training/ is below it
    for path in sorted((ROOT / "metajudge" / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("metajudge.stages")], path.name


#: fast-moving dependencies: each has a lower and a tested upper bound
BOUNDED = ("trl", "transformers", "accelerate", "deepspeed", "vllm", "peft", "datasets")


def test_fast_moving_dependencies_have_tested_bounds() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    found: dict[str, list[Requirement]] = {}
    for group in extras.values():
        requirements = [Requirement(text) for text in group]
        installed = {}
        for requirement in requirements:
            found.setdefault(requirement.name, []).append(requirement)
            try:
                installed[requirement.name] = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                pass
        if len(installed) < len(requirements):
            continue  # an extra not installed in this environment
        for requirement in requirements:  # what is installed here is what was tested
            assert requirement.specifier.contains(installed[requirement.name],
                                                  prereleases=True), requirement
    for name in BOUNDED:
        assert name in found, name
        for requirement in found[name]:
            operators = {spec.operator for spec in requirement.specifier}
            assert operators & {"<", "==", "~="} and operators & {">=", "==", "~="}, requirement
    # ZeRO-3 with precomputed reference log-probabilities works from TRL 1.9 (TRL PR 6403)
    assert all(not r.specifier.contains("1.8.9") for r in found["trl"])


def test_a_build_lock_left_by_a_killed_rank_is_cleared_before_a_launch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's JIT build lock (DeepSpeed's CPU op, loaded by every rank) is a plain file: a rank
    # killed while holding it made every later ZeRO-3 launch wait for ever
    from metajudge.stages.train import STALE_LOCK_S, clear_stale_build_locks

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    old, fresh = tmp_path / "py311_cpu" / "shm" / "lock", tmp_path / "py311_cpu" / "adam" / "lock"
    for lock in (old, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    stale = old.stat().st_mtime - STALE_LOCK_S - 60
    os.utime(old, (stale, stale))
    assert clear_stale_build_locks() == [old]
    assert not old.exists() and fresh.exists()  # a build in progress keeps its lock


def test_qlora_under_a_zero3_config_is_refused_by_name() -> None:
    """transformers loads a 4-bit model outside zero.Init, and ZeRO-3 would need
    bnb_4bit_quant_storage: refused before anything starts (the launcher prefix skips the check
    for a GPU here, as on a cluster whose GPUs are on the machines the ranks run on)."""
    from metajudge.stages.train import check_training

    qlora = ["training.lora={r: 8, alpha: 16, qlora: true}", "training.launcher=accelerate",
             "training.launcher_prefix=srun", "training.num_processes=2",
             "training.per_device_batch_size=1"]
    cfg = load_config(None, [*qlora, "training.accelerate_config=zero3"]).training
    with pytest.raises(ValueError, match=r"training\.lora\.qlora .*zero3\.yaml.*ZeRO-3"):
        check_training(cfg)
    check_training(cfg.model_copy(update={"accelerate_config": "ddp"}))  # QLoRA under DDP runs
    check_training(cfg.model_copy(update={"lora": cfg.lora.model_copy(  # type: ignore[union-attr]
        update={"qlora": False})}))  # and LoRA under ZeRO-3


def test_zero3_checks_read_a_deepspeed_json_file(tmp_path: Path) -> None:
    # an accelerate config may name its DeepSpeed settings in deepspeed_config_file
    from metajudge.stages.train import check_training

    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {
        "stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}))
    raw = yaml.safe_load(accelerate_config("zero3").read_text())
    raw["deepspeed_config"] = {"deepspeed_config_file": str(tmp_path / "ds.json"),
                               "zero3_init_flag": True}
    path = tmp_path / "zero3_file.yaml"
    path.write_text(yaml.safe_dump(raw))
    settings = ["training.launcher=accelerate", f"training.accelerate_config={path}",
                "training.num_processes=2", "training.per_device_batch_size=1"]
    with pytest.raises(ValueError, match="zero3_save_16bit_model"):
        check_training(load_config(None, settings).training)
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {
        "stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}))
    check_training(load_config(None, settings).training)
    qlora = load_config(None, [*settings, "training.lora={r: 8, alpha: 16, qlora: true}",
                               "training.launcher_prefix=srun"]).training
    with pytest.raises(ValueError, match=r"training\.lora\.qlora"):
        check_training(qlora)


def test_adamw_on_16_bit_weights_is_refused() -> None:
    import torch

    from metajudge.training.dpo import check_master_weights

    with pytest.raises(ValueError, match="16-bit weights"):
        check_master_weights(torch.nn.Linear(2, 2).bfloat16(), deepspeed=False)
    check_master_weights(torch.nn.Linear(2, 2), deepspeed=False)


def test_a_deepspeed_config_without_fp32_accumulation_is_named_before_training(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A user's accelerate config with inline deepspeed_config (no file) cannot pass
    data_types.grad_accum_dtype (accelerate builds the DeepSpeed dict from its own keys), so
    DeepSpeed sums gradients in bf16: said up front, not only in the checkpoint afterwards."""
    import logging

    from metajudge.stages.train import check_training

    raw = yaml.safe_load(accelerate_config("zero3").read_text())
    raw["deepspeed_config"] = {"zero_stage": 3, "zero3_init_flag": True,
                               "zero3_save_16bit_model": True,
                               "offload_optimizer_device": "none",
                               "offload_param_device": "none"}
    path = tmp_path / "inline.yaml"
    path.write_text(yaml.safe_dump(raw))
    settings = ["training.launcher=accelerate", "training.num_processes=2",
                "training.per_device_batch_size=1"]
    with caplog.at_level(logging.WARNING, logger="metajudge.stages.train"):
        check_training(load_config(None, [*settings, f"training.accelerate_config={path}"]
                                   ).training)
    assert "grad_accum_dtype fp32" in caplog.text and str(path) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metajudge.stages.train"):
        check_training(load_config(None, [*settings, "training.accelerate_config=zero3"]
                                   ).training)
        check_training(load_config(None, [*settings, f"training.accelerate_config={path}",
                                          "training.mixed_precision=no"]).training)
    assert "grad_accum_dtype" not in caplog.text  # the shipped file has it; fp32 needs none


def test_one_accelerate_process_on_several_gpus_is_refused_like_inprocess(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`accelerate launch --num_processes=1` without a distributed config starts one plain
    process (accelerate/commands/launch.py: simple_launcher, no LOCAL_RANK), where transformers
    sets n_gpu = torch.cuda.device_count() (training_args.py, DistributedType.NO) and TRL then
    refuses nn.DataParallel after the stages had run. (No GPU here: the count is replaced.)"""
    import torch

    from metajudge.stages.train import check_training

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    one = ["training.launcher=accelerate", "training.num_processes=1",
           "training.per_device_batch_size=1", "training.global_batch_size=4"]
    with pytest.raises(ValueError, match=r"training.launcher accelerate trains in one process "
                       r"here, but 4 GPUs"):
        check_training(load_config(None, one).training)
    # a ZeRO-3 or DDP config launches through torchrun even for one process: LOCAL_RANK is set
    check_training(load_config(None, [*one, "training.accelerate_config=zero3"]).training)
    check_training(load_config(None, [*one, "training.accelerate_config=ddp"]).training)

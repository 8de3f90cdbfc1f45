"""The launched-training commands and the shipped accelerate configs, checked statically (FSDP
and DeepSpeed do not run on this CPU; scripts/gpu_check.sh runs them on a GPU)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

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
    assert config.mixed_precision == "bf16"
    raw = yaml.safe_load(path.read_text())
    if name == "zero3":
        assert raw["deepspeed_config"]["zero_stage"] == 3
        assert raw["deepspeed_config"]["zero3_save_16bit_model"] is True  # loadable by vLLM
    if name == "fsdp":
        assert raw["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_launch_commands(tmp_path: Path) -> None:
    torchrun = load_config(None, ["training.launcher=torchrun", "training.num_processes=8",
                                  "training.global_batch_size=32",
                                  "training.per_device_batch_size=1"]).training
    command = launch_command(tmp_path, 2, torchrun)
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=8"]
    assert command[-5:] == ["-m", "metajudge.training.dpo", str(tmp_path), "--iteration", "2"]
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

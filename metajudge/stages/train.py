"""Stage ``train``: one iteration's DPO on its ``dpo_pairs.jsonl``, from M_t, resumable.

    metajudge train RUN_DIR --iteration 1

``training.launcher`` says how: ``inprocess`` trains in this process (the CPU default);
``torchrun`` and ``accelerate`` start a distributed job (``training.num_processes`` over
``training.num_machines``, ``training.accelerate_config`` for DDP, FSDP or ZeRO-3) whose ranks
run :mod:`metajudge.training.dpo`. The launcher runs under a guard (:mod:`metajudge.processes`),
so no rank outlives it. A finished checkpoint is kept; a killed training leaves none and
retrains from M_t. The manifest's ``iter_NN/train`` entry records the launcher, the world
size, the per-device batch, the accumulation and the global batch.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from metajudge.config import TrainingConfig
from metajudge.processes import Child
from metajudge.store import DPO_PAIRS, LOCK_ENV, Store
from metajudge.training.dpo import CHECKPOINT, MARKER, checkpoint_done, train_dpo

log = logging.getLogger(__name__)

STAGE = "train"
#: accelerate configs shipped with metajudge (``training.accelerate_config: zero3``)
SHIPPED_CONFIGS = ("ddp", "fsdp", "zero3")


class LaunchFailed(RuntimeError):
    """A launched training job exited with an error; the message holds its log's end."""


def iteration_model(store: Store, iteration: int) -> str:
    """M_t: the seed model (or the EFT checkpoint the config names) for iteration 1, else the
    previous iteration's checkpoint."""
    if iteration == 1:
        return seed_model(store)
    previous = store.iteration_dir(iteration - 1)
    if not checkpoint_done(previous):
        raise FileNotFoundError(f"{previous / CHECKPOINT} is missing: iteration {iteration - 1} "
                                "has not finished training")
    return str(previous / CHECKPOINT)


def seed_model(store: Store) -> str:
    """M_1: ``eft.checkpoint`` when the config names one (iteration 0), else the seed model."""
    eft = store.config.eft.checkpoint
    if eft is None:
        return str(store.config.backend.model)
    path = Path(eft)
    if (path / CHECKPOINT / MARKER).is_file():
        path = path / CHECKPOINT  # an `metajudge eft --out DIR` folder
    if not (path / MARKER).is_file() and not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"eft.checkpoint {eft}: no finished checkpoint there; run "
                                "`metajudge eft` first")
    return str(path)


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config by name, or the user's file."""
    if name in SHIPPED_CONFIGS:
        return Path(str(resources.files("metajudge") / "data" / "accelerate" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"training.accelerate_config {name}: no such file (shipped: "
                                f"{', '.join(SHIPPED_CONFIGS)})")
    return path


def launch_command(run_dir: Path, iteration: int, cfg: TrainingConfig,
                   progress: bool = True) -> list[str]:
    """The command that starts the distributed job. With ``training.launcher_prefix`` (e.g.
    ``srun``) the prefix starts a shell on every machine, which runs the launcher, so
    variables such as accelerate's ``training.machine_rank`` expand on each machine."""
    worker = ["-m", "metajudge.training.dpo", str(run_dir), "--iteration", str(iteration)]
    if not progress:
        worker.append("--no-progress")
    per_node = cfg.num_processes // cfg.num_machines
    several = cfg.num_machines > 1
    if several and not cfg.rdzv_endpoint:
        raise ValueError(f"training.rdzv_endpoint (host:port of the first machine) is needed for "
                         f"{cfg.launcher} over several machines")
    expanded = ""  # arguments the shell of each machine expands
    if cfg.launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run",
                   f"--nproc_per_node={per_node}", f"--nnodes={cfg.num_machines}"]
        if several:
            command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={cfg.rdzv_endpoint}"]
    elif cfg.launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch",
                   f"--num_processes={cfg.num_processes}", f"--num_machines={cfg.num_machines}"]
        if cfg.accelerate_config:
            command.append(f"--config_file={accelerate_config(cfg.accelerate_config)}")
        if several:
            host, _, port = str(cfg.rdzv_endpoint).rpartition(":")
            command += [f"--main_process_ip={host}", f"--main_process_port={port}",
                        "--rdzv_backend=static"]
            expanded = f" --machine_rank={cfg.machine_rank}"
    else:
        raise ValueError(f"launcher {cfg.launcher} is not a launched job")
    if not cfg.launcher_prefix and not expanded:
        return command + worker
    text = shlex.join(command) + expanded + " " + shlex.join(worker)
    if cfg.launcher_prefix:
        return ["bash", "-c", f"{cfg.launcher_prefix} bash -c {shlex.quote(text)}"]
    return ["bash", "-c", text]


def train_iteration(run_dir: Path, iteration: int, *, progress: bool = True) -> None:
    """Train in this process (one rank of a job, or the whole inprocess training)."""
    store = Store.open(run_dir, lock=False)
    cfg = store.config
    rows = [json.loads(line) for line in store.path(DPO_PAIRS, iteration).read_text(
        encoding="utf-8").splitlines() if line.strip()]
    train_dpo(iteration_model(store, iteration), rows, store.iteration_dir(iteration),
              cfg.training, seed=cfg.seed + iteration, revision=cfg.backend.revision,
              trust_remote_code=cfg.backend.trust_remote_code, progress=progress)


def run_train(store: Store, iteration: int, *, progress: bool = True) -> dict[str, Any]:
    """Train iteration ``iteration`` unless its checkpoint is there; returns the manifest entry."""
    folder = store.iteration_dir(iteration)
    cfg = store.config.training
    if not checkpoint_done(folder):
        pairs = store.path(DPO_PAIRS, iteration)
        if not pairs.is_file():
            raise FileNotFoundError(f"{pairs}: run `metajudge pairs` first")
        if not pairs.read_text(encoding="utf-8").strip():
            raise ValueError(f"{pairs} holds no preference pairs: nothing to train on (see "
                             "pair_decisions.jsonl for why)")
        for stale in (folder / (CHECKPOINT + ".tmp"), folder / "trainer"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed training
        store.save_config()  # the trainer (and every rank) reads its settings from config.yaml
        if cfg.launcher == "inprocess":
            train_iteration(store.root, iteration, progress=progress)
        else:
            _launch(store, iteration, progress)
    meta = json.loads((folder / CHECKPOINT / MARKER).read_text())
    entry = {"stage": STAGE, "iteration": iteration, "launcher": cfg.launcher,
             "world_size": meta.get("world_size", 1),
             "per_device_batch_size": meta.get("per_device_batch_size"),
             "gradient_accumulation": meta.get("gradient_accumulation"),
             "global_batch_size": meta.get("global_batch_size"),
             "mixed_precision": meta.get("mixed_precision"), "lora": meta.get("lora"),
             "pairs": meta["pairs"], "steps": meta["steps"], "seconds": meta["seconds"],
             **{f"final_{k}": v for k, v in meta["final_metrics"].items()}}
    if store.manifest().get("stages", {}).get(f"iter_{iteration:02d}/{STAGE}") != entry:
        store.record_stage(f"iter_{iteration:02d}/{STAGE}", entry)
    return entry


def _launch(store: Store, iteration: int, progress: bool) -> None:
    command = launch_command(store.root.resolve(), iteration, store.config.training, progress)
    log_path = store.iteration_dir(iteration) / "train.log"
    env = {**os.environ, LOCK_ENV: str(store.root.resolve())}
    log.info("launching: %s (log: %s)", shlex.join(command), log_path)
    child = Child.start(command, log=log_path, env=env)
    try:
        code = child.wait()
    finally:
        child.stop()
    if code != 0 or not checkpoint_done(store.iteration_dir(iteration)):
        raise LaunchFailed(f"training of iteration {iteration} failed (exit {code}); command: "
                           f"{shlex.join(command)}; log {log_path}:\n{child.tail()}")

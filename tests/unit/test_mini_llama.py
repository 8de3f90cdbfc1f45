"""The Llama-3-style models built on this machine (metajudge.mini_llama): Llama-3's template,
a tokenizer that splits the space from the digit, eos <|eot_id|>, a deterministic build."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from metajudge.mini_llama import LLAMA3_CHAT_TEMPLATE, _build
from metajudge.models import convert_embedded_model, resolve_model

transformers = pytest.importorskip("transformers")


def test_the_template_is_llama3_instructs_own() -> None:
    trl = pytest.importorskip("trl")
    shipped = Path(trl.__file__).parent / "chat_templates" / "llama3.jinja"
    assert LLAMA3_CHAT_TEMPLATE == shipped.read_text().rstrip("\n")


@pytest.mark.parametrize("name", ["llama3-mini", "smollm2-llama3"])
def test_the_model_resolves_with_llama3s_tokens_and_template(name: str) -> None:
    resolved = resolve_model(name)
    assert resolved.local and resolved.revision and len(resolved.revision) == 16
    tok = transformers.AutoTokenizer.from_pretrained(resolved.path)
    ids = tok("Score: 4").input_ids
    assert [tok.decode([i]) for i in ids] == ["<|begin_of_text|>", "Score", ":", " ", "4"]
    assert tok.eos_token == "<|eot_id|>" and tok.pad_token is None
    chat = [{"role": "user", "content": "  Rate it.  "},
            {"role": "assistant", "content": "Fine.\nScore: "}]
    text = tok.apply_chat_template(chat, tokenize=False, continue_final_message=True)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nRate it."
                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nFine.\nScore:")
    config = transformers.AutoConfig.from_pretrained(resolved.path)
    assert config.model_type == "llama" and config.vocab_size == len(tok)
    assert config.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>")
    weights = (Path(resolved.path) / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest()[:16] == resolved.revision


def test_the_build_is_deterministic(tmp_path: Path) -> None:
    digests = []
    for k in range(2):
        _build("llama3-mini", tmp_path / str(k), convert_embedded_model())
        digests.append(hashlib.sha256((tmp_path / str(k) / "model.safetensors").read_bytes())
                       .hexdigest()[:16])
    assert digests[0] == digests[1] == resolve_model("llama3-mini").revision


def test_models_and_mini_llama_import_one_way() -> None:
    """models resolves the mini models' names; mini_llama imports nothing of metajudge's."""
    import ast

    import metajudge.mini_llama as mini

    tree = ast.parse(Path(mini.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names]
    assert not [name for name in imported if name.startswith("metajudge")], imported

"""Versioned prompt templates: data files with a name, a version, the variables they take and the
output format they ask for.

Values are inserted in a single pass over the template's own text, so an instruction or response
containing ``{{ ... }}`` or ``{% ... %}`` appears literally: user text is data and is never
evaluated. Users can point the config at their own YAML file of the same shape.

>>> t = load_template("judge")
>>> t.ref
'judge-additive-5pt@1'
>>> "{{ not a variable }}" in t.render(instruction="Say {{ not a variable }}", response="{% x %}")
True
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")

#: built-in templates by role
BUILTIN = {"judge": "judge_additive.yaml", "meta_judge": "meta_judge.yaml",
           "meta_judge_hidden": "meta_judge_hidden.yaml",
           "pairwise": "pairwise.yaml", "mt_bench_single": "mt_bench_single.yaml",
           "mt_bench_single_ref": "mt_bench_single_ref.yaml",
           "mt_bench_multi": "mt_bench_multi.yaml", "mt_bench_multi_ref": "mt_bench_multi_ref.yaml"}


class Template(BaseModel):
    """A prompt template loaded from a YAML file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    description: str = ""
    variables: tuple[str, ...]
    output_format: str
    template: str

    @model_validator(mode="after")
    def _placeholders_match(self) -> Template:
        used = set(_PLACEHOLDER.findall(self.template))
        if used != set(self.variables):
            raise ValueError(
                f"template {self.name}: placeholders {sorted(used)} differ from declared "
                f"variables {sorted(self.variables)}"
            )
        return self

    @property
    def ref(self) -> str:
        """``name@version``, recorded on every record made with this template."""
        return f"{self.name}@{self.version}"

    def render(self, **values: str) -> str:
        """Insert the values; every declared variable must be given, no other."""
        missing = set(self.variables) - set(values)
        extra = set(values) - set(self.variables)
        if missing or extra:
            raise ValueError(f"template {self.ref}: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template).rstrip("\n")


def load_template(role_or_path: str | Path) -> Template:
    """A built-in template by role (``judge``, ``meta_judge``, ``pairwise``) or a YAML file."""
    if str(role_or_path) in BUILTIN:
        text = (importlib.resources.files("metajudge") / "templates"
                / BUILTIN[str(role_or_path)]).read_text(encoding="utf-8")
        where = f"built-in {role_or_path}"
    else:
        path = Path(role_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"template file {path} not found")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        return Template.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"{where}: invalid template: {exc}") from exc


def rubric_text(judge: Template) -> str:
    """The judge template's rubric part, shown to the meta-judge (everything before the
    question block)."""
    return judge.template.split("<question>")[0].strip()

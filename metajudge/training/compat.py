"""Names that differ between the supported transformers releases (5.0 to 5.24), so training
raises no deprecation warning on any of them.

transformers 5.20 renamed ``TrainingArguments.gradient_checkpointing`` to
``activation_checkpointing`` and ``PreTrainedModel.is_gradient_checkpointing`` to
``is_activation_checkpointing``; the old names still work there but warn (FutureWarning, "will
be removed in v6"), and before 5.20 only the old names exist (the vLLM environment pins
transformers < 5.20).

- :func:`checkpointing_args` names the setting as the installed ``TrainingArguments`` has it.
  TRL's configs default the old field to True, so leaving it unset warns too: the setting is
  always given.
- :func:`quiet_checkpointing_alias` hides the one warning left: TRL 1.16's own
  ``disable_gradient_checkpointing`` (around every reference forward of DPO) reads
  ``model.is_gradient_checkpointing``, and no argument avoids that read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator

#: the deprecated property TRL reads; its FutureWarning's text starts with it (transformers 5.24)
_ALIAS_WARNING = r"`is_gradient_checkpointing` is deprecated"


def checkpointing_args(config_class: type, enabled: bool | None = None) -> dict[str, bool]:
    """The keyword that sets activation (gradient) checkpointing in ``config_class`` (a
    ``TrainingArguments`` dataclass such as ``trl.DPOConfig``): ``activation_checkpointing``
    where the installed transformers has it, else ``gradient_checkpointing``. ``enabled``
    None keeps the class's own default (TRL's: on).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Old:
    ...     gradient_checkpointing: bool = True
    >>> checkpointing_args(Old, False), checkpointing_args(Old)
    ({'gradient_checkpointing': False}, {'gradient_checkpointing': True})
    >>> @dataclass
    ... class New(Old):
    ...     activation_checkpointing: bool | None = None
    >>> checkpointing_args(New, False), checkpointing_args(New)
    ({'activation_checkpointing': False}, {'activation_checkpointing': True})
    """
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if enabled is None:
        enabled = bool(fields["gradient_checkpointing"].default)
    name = "activation_checkpointing" if "activation_checkpointing" in fields \
        else "gradient_checkpointing"
    return {name: enabled}


@contextlib.contextmanager
def quiet_checkpointing_alias() -> Iterator[None]:
    """Within it, transformers' FutureWarning for ``is_gradient_checkpointing`` (read by TRL,
    not by metajudge) is not shown; every other warning is. On exit only this filter is taken
    out: filters that others added meanwhile (TRL and accelerate add theirs when first
    imported, inside the training) stay, where ``warnings.catch_warnings`` would restore the
    whole list as it was."""
    had = list(warnings.filters)
    warnings.filterwarnings("ignore", message=_ALIAS_WARNING, category=FutureWarning)
    ours = warnings.filters[0]
    try:
        yield
    finally:
        if ours not in had:  # an equal filter of someone else's stays
            with contextlib.suppress(ValueError):
                warnings.filters.remove(ours)  # type: ignore[attr-defined]
            warnings._filters_mutated()  # type: ignore[attr-defined]

"""The stage side of adaptive judging (SPEC §5a): the rules' settings, the audit sample, and
reading back what a round's requests gave.

The rules themselves are :mod:`metajudge.judging.adaptive`'s pure functions. A stage replays
them from the records on disk: round 0's requests follow from nothing, round r's from what the
requests of rounds 0..r−1 gave (a record, or a failure for good), so a killed stage resumes to
the same decisions, and a round whose requests are not all answered is the one to (re)run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from metajudge.config import RunConfig, scheduled
from metajudge.judging.adaptive import JudgeRule, MetaRule
from metajudge.seeds import derive_seed
from metajudge.store import StageFile, Store

#: the largest value derive_seed gives, plus one
_SEEDS = 2**31 - 1


def audited(seed: int, iteration: int, prompt_id: str, share: float) -> bool:
    """Whether a prompt is in the iteration's audit sample: its seeded uniform draw is below
    ``share``. The judge and meta-judge stages draw the same number, so equal shares give the
    same sample and a smaller share a subset of a larger one.

    >>> audited(0, 1, "p", 0.0), audited(0, 1, "p", 1.0)
    (False, True)
    """
    return derive_seed(seed, "audit", iteration, prompt_id) / _SEEDS < share


def audit_share(config: RunConfig) -> float:
    """The audit's share of prompts, one sample for both stages: the larger of the adaptive
    stages' ``audit_share``. An audited prompt gets the whole full procedure, so with
    ``judge.adaptive`` the judge stage audits the meta-judge's sample too (the full
    procedure's selection and cost need all N judgments of every response)."""
    return max(config.meta_judge.audit_share if config.meta_judge.adaptive else 0.0,
               config.judge.audit_share if config.judge.adaptive else 0.0)


def judge_rule(config: RunConfig) -> JudgeRule:
    cfg = config.judge
    return JudgeRule(max_judgments=cfg.judgments_per_response, initial=cfg.adaptive_initial,
                     step=cfg.adaptive_step, z=cfg.adaptive_z, sd_floor=cfg.adaptive_sd_floor,
                     tolerance=cfg.adaptive_tolerance)


def meta_rule(config: RunConfig) -> MetaRule:
    cfg = config.meta_judge
    return MetaRule(z=cfg.adaptive_z, tolerance=cfg.adaptive_tolerance, prior=cfg.adaptive_prior,
                    consistent_only=cfg.consistent_only)


def actor_rule(config: RunConfig, iteration: int) -> tuple[float, int | None]:
    """(ρ, the longest chosen response) of the iteration's actor pairs (SPEC §4): the judge
    stage asks for judgments where they can change that pair."""
    cfg = config.pairs
    return (float(scheduled(cfg.rho, iteration)),
            cfg.first_iteration_max_chosen_chars if iteration == 1 else None)


def judge_settings(config: RunConfig, iteration: int) -> dict[str, Any]:
    """What the adaptive judge stage records of its rule (the actor rule included: it decides
    which judgments are asked for); a change of any is refused by name."""
    rho, limit = actor_rule(config, iteration)
    cfg = config.judge
    return {"adaptive": {"initial": cfg.adaptive_initial, "step": cfg.adaptive_step,
                         "z": cfg.adaptive_z, "sd_floor": cfg.adaptive_sd_floor,
                         "tolerance": cfg.adaptive_tolerance,
                         "audit_share": audit_share(config), "rho": rho, "max_chosen_chars": limit}}


def meta_settings(config: RunConfig) -> dict[str, Any]:
    cfg = config.meta_judge
    return {"adaptive": {"z": cfg.adaptive_z, "tolerance": cfg.adaptive_tolerance,
                         "prior": cfg.adaptive_prior, "audit_share": cfg.audit_share,
                         # the races fit the statistic the pairs use (recorded when on only)
                         **({"consistent_only": True} if cfg.consistent_only else {}),
                         "judge_adaptive_initial": config.judge.adaptive_initial
                         if config.judge.adaptive else None}}


def answers(store: Store, file: StageFile, iteration: int, ids: Collection[str],
            value: Callable[[Any], Any]) -> dict[str, Any]:
    """What the requests ``ids`` gave: ``value(record)`` for each made record, None for each
    that failed for good; ids still unanswered (retryable failures) are absent."""
    wanted = set(ids)
    found = {r.id: value(r) for r in store.iter_records(file, iteration) if r.id in wanted}
    for failed in store.final_failures(file, iteration) & wanted:
        found.setdefault(failed, None)
    return found

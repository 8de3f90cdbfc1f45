"""Pairwise judging of the model's answers against a baseline's, on the stage runner.

Every game is one judgment by :class:`~metajudge.judging.scorers.PairwiseJudge`: the pairwise
template with the two answers in a given order; a reply without a verdict label gets one
follow-up turn asking for it (as arena-hard-auto does), and where the backend scores labels a
follow-up still without one gets a read-out of A or B after ``Final verdict: [[``
(``judging.forced_readout``). ``verdict_source`` records which of ``parsed``, ``follow_up``
and ``forced`` gave the verdict; a game that still has none is recorded with ``verdict=None``
and the reason (``failed``), and counted. Games finished in an earlier pass are reused; backend
failures go to ``<name>.failures.jsonl`` and are tried again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from metajudge.backends.base import Backend
from metajudge.evaluation.records import PairwiseGame
from metajudge.judging.readout import readouts_not_run
from metajudge.judging.scorers import Outcome, PairwiseJudge
from metajudge.records import GenerationRequest, Provenance, SamplingParams
from metajudge.seeds import derive_seed
from metajudge.stages.judge import template_settings
from metajudge.stages.runner import Item, StageRun, Step
from metajudge.store import Store, evaluation_file
from metajudge.templates import load_template


@dataclass(frozen=True)
class Game:
    """One pairwise comparison to make."""

    id: str
    item_id: str
    instruction: str
    model_answer: str
    baseline_answer: str
    model_position: Literal["A", "B"]
    model: str
    baseline: str

    @property
    def answers(self) -> tuple[str, str]:
        if self.model_position == "A":
            return self.model_answer, self.baseline_answer
        return self.baseline_answer, self.model_answer


def hashed_position(*content: str) -> Literal["A", "B"]:
    """Where the model's answer goes, from a hash of the content: the same for every rerun and
    every judge, and balanced over items."""
    digest = hashlib.sha256("\x1f".join(content).encode("utf-8")).digest()
    return "A" if digest[0] & 1 else "B"


def judge_games(
    store: Store, backend: Backend, games: Sequence[Game], *, name: str = "games",
    progress: bool = True,
) -> dict[str, PairwiseGame]:
    """Judge the games not judged yet; returns every judged game by id."""
    config = store.config
    file = evaluation_file(name)
    template = load_template(config.template)
    sampling = config.judging
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_tokens)
    caps = backend.capabilities
    if not sampling.forced_readout:
        caps = caps.model_copy(update={"label_scores": False})
    judge = PairwiseJudge(template, caps)
    run = StageRun(store, file, backend, stage=f"{config.harness} judge", iteration=None,
                   settings={**template_settings(template), "params": params.model_dump(),
                             "forced_readout": sampling.forced_readout, "seed": config.seed,
                             **readouts_not_run(f"{config.harness} judge",
                                                {"forced_readout": sampling.forced_readout},
                                                backend.capabilities, backend.fingerprint)},
                   runner=config.runner, progress=progress, unit="game")

    def start(game: Game) -> Step:
        request = GenerationRequest(
            id=game.id, messages=judge.messages(game.instruction, *game.answers), params=params,
            seed=derive_seed(config.seed, "pairwise", game.id, False))
        provenance = Provenance(backend=backend.fingerprint, params=params, seed=request.seed,
                                sample_index=0, template=template.ref,
                                swapped=game.model_position == "B")

        def finish(outcome: Outcome) -> PairwiseGame:
            run.count(outcome.source)
            return PairwiseGame(
                id=game.id, item_id=game.item_id, model=game.model, baseline=game.baseline,
                model_position=game.model_position, verdict=outcome.value,
                verdict_source=outcome.source,  # type: ignore[arg-type]
                parse_error=outcome.error, judgment=outcome.text,
                prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                provenance=provenance)

        return judge.start(request, finish, lambda failure: run.failed(
            game.id, Step(request, finish), failure, template.ref))  # type: ignore[arg-type]

    def items() -> Iterator[Item]:
        for game in games:
            yield Item(game.id, partial(start, game))

    run.run(items, total=len(games), prompts=len({g.item_id for g in games}))
    wanted = {g.id for g in games}
    return {g.id: g for g in store.iter_records(file) if g.id in wanted}


__all__ = ["Game", "hashed_position", "judge_games"]

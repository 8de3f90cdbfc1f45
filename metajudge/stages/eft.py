"""The EFT seed stage (iteration 0): evaluation fine-tuning data from human-ranked replies, and
the SFT that turns M_0 into the model the Meta-Rewarding iterations start from.

    metajudge eft --ranked oasst1_en_train_ranked.jsonl --out runs/eft [--config C] [--limit N]
    metajudge run configs/paper.yaml --set eft.checkpoint=runs/eft --out runs/paper

What we follow (Yuan et al. 2024, Self-Rewarding Language Models, §3.1 and §4.1): the EFT set is
made of LLM-as-a-Judge examples on Open Assistant prompts whose replies humans ranked. The seed
model writes judgments of every reply with the additive 5-point rubric, and a prompt's judgments
are kept only when "the ranking of their scores agrees with the human rankings"; the paper then
resamples the kept examples "so that the scores are more evenly distributed". Here:

1. **Prompts**: every row of ``--ranked`` (the schema of ``oasst1_en_val_ranked.jsonl``: prompt,
   history, replies with their human rank, 0 = best) with at least two ranked replies. A prompt
   that is one of the evaluation sets' (the first-turn OASST validation prompts of the judge
   evaluation, AlpacaEval's 805 instructions, Arena-Hard's 500 questions) is left out, and said
   so in the decisions. Multi-turn prompts show the conversation so far as the instruction.
2. **Judgments**: ``eft.judgments_per_reply`` rubric judgments per reply by M_0
   (``eft_judgments.jsonl``), on the stage runner, resumable. A reply's score is the mean of its
   parsed scores (with ``eft.use_forced``, of its forced read-outs too).
3. **Filter** (``eft_decisions.jsonl``): a prompt is kept when every ranked reply has a score and,
   for every two replies with different human ranks, the better-ranked one scores strictly
   higher. Judge ties between differently ranked replies count as disagreement.
4. **Examples**: every scored judgment of a kept prompt: (judge prompt → judgment text). A forced
   judgment's text ends with the ``Score: N`` line the read-out gave it, so that the model learns
   to write its verdict. **Balance** (``eft.balance``): the paper does not give its resampling
   rule; ours caps each score's examples at the count of the second most frequent score,
   choosing the ones kept by a seeded shuffle.
5. **SFT** through TRL's ``SFTTrainer`` on those prompt/completion pairs (loss on the completion
   only), fp32 master weights with the training section's mixed precision, gives
   ``checkpoint/``, a full safetensors model like every iteration's.

The whole stage resumes: judgments continue where they stopped (while the judged prompts and
replies are the same texts: their digest is one of the judgments' settings, so a changed
``--ranked`` file or ``--limit`` is refused, and ``--redo`` judges again), decisions are
recomputed, and a finished checkpoint is kept while it was trained from the same examples, base
model and SFT settings (else it is moved aside into ``replaced/`` and trained again, with a
warning). A forced read-out the backend cannot make is named once in the log and recorded in the
judgments' settings (``readouts_not_run``), so a resume on a backend that can make it is refused.
Judgments still failing in a retryable way after the runner's retry passes stop the stage before
the filter, as in the loop: the rerun retries them.
``metajudge run`` records it as iteration 0 when ``eft.checkpoint`` names the folder.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from metajudge.backends.base import Backend
from metajudge.config import RunConfig
from metajudge.evaluation.records import EFTDecision
from metajudge.jsonl import InputError, iter_lines, parse_line
from metajudge.judging.readout import SCORE_PREFILL, readouts_not_run
from metajudge.judging.scorers import Outcome, ReadoutPolicy, RubricJudge
from metajudge.records import (
    Capabilities,
    GenerationRequest,
    Judgment,
    Provenance,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stages.judge import judge_template, template_settings
from metajudge.stages.runner import Item, StageRun, StageSummary, Step, require_finished
from metajudge.store import Store, digest, evaluation_file

log = logging.getLogger(__name__)

STAGE = "eft"
JUDGMENTS = evaluation_file("eft_judgments")
DECISIONS = evaluation_file("eft_decisions")
EXAMPLES = "eft_sft.jsonl"


class _Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    text: str


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message_id: str
    text: str
    rank: int | None = None


class RankedRow(BaseModel):
    """One prompt with human-ranked replies (``oasst1_en_val_ranked.jsonl``'s schema)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    prompt_id: str
    prompt: str
    history: tuple[_Turn, ...] = ()
    replies: tuple[_Reply, ...]

    @property
    def ranked(self) -> list[_Reply]:
        return [r for r in self.replies if r.rank is not None]

    def instruction(self) -> str:
        """The prompt, after the conversation so far when there is one."""
        if not self.history:
            return self.prompt
        names = {"prompter": "User", "assistant": "Assistant"}
        turns = [f"{names.get(t.role, t.role)}: {t.text}" for t in self.history]
        return "\n\n".join([*turns, f"User: {self.prompt}"])


def load_ranked(path: str | Path) -> list[RankedRow]:
    """Read a ranked-replies file; a bad line stops with its file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, None, "ranked replies file not found")
    return [parse_line(path, number, raw, RankedRow) for number, raw in iter_lines(path)]


def evaluation_prompts() -> set[str]:
    """The texts the evaluations use, which EFT training must not see."""
    from metajudge.evaluation.benchmarks import (
        alpaca_eval_items,
        arena_hard_questions,
        oasst_ranked_prompts,
    )

    return ({p.prompt.strip() for p in oasst_ranked_prompts()}
            | {i.instruction.strip() for i in alpaca_eval_items()}
            | {q.prompt.strip() for q in arena_hard_questions()})


@dataclass(frozen=True)
class Selection:
    rows: list[RankedRow]
    held_out: list[RankedRow]
    too_few: list[RankedRow]


def select_prompts(rows: list[RankedRow], limit: int | None = None) -> Selection:
    held = evaluation_prompts()
    usable, held_out, too_few = [], [], []
    for row in rows:
        if row.prompt.strip() in held:
            held_out.append(row)
        elif len(row.ranked) < 2:
            too_few.append(row)
        else:
            usable.append(row)
    return Selection(usable[:limit] if limit else usable, held_out, too_few)


def ranked_digest(rows: list[RankedRow]) -> str:
    """The digest of what the judgments are made from: every judged prompt's id and text (with
    its conversation) and its ranked replies' ids and texts, so that judgments of one text are
    never reused for another under the same ids."""
    return digest(json.dumps([[row.prompt_id, row.instruction(),
                               [[r.message_id, r.text] for r in row.ranked]] for row in rows]))


def run_eft_judgments(store: Store, backend: Backend, rows: list[RankedRow], *,
                      progress: bool = True, redo: bool = False) -> StageSummary:
    """N rubric judgments of every ranked reply (resumable). The judged texts' digest is one
    of the settings: judgments are refused once the ``--ranked`` rows (or ``--limit``) change,
    and ``redo`` makes them again."""
    cfg: RunConfig = store.config
    template = judge_template(store)
    judge = RubricJudge(template, ReadoutPolicy(cfg.judge.forced_readout, False),
                        backend.capabilities)
    params = SamplingParams(temperature=cfg.eft.temperature, top_p=cfg.eft.top_p,
                            max_tokens=cfg.eft.max_tokens)
    settings = {**template_settings(template), "params": params.model_dump(),
                "judgments_per_reply": cfg.eft.judgments_per_reply,
                "forced_readout": cfg.judge.forced_readout, "seed": cfg.seed,
                "ranked_sha256": ranked_digest(rows),
                # what did not run for want of label scoring (warned once), by name
                **readouts_not_run("eft judge", {"forced_readout": cfg.judge.forced_readout},
                                   backend.capabilities, backend.fingerprint)}
    run = StageRun(store, JUDGMENTS, backend, stage="eft judge", iteration=None,
                   settings=settings, runner=cfg.runner, progress=progress, unit="judgment",
                   redo=redo)

    def start(row: RankedRow, reply: _Reply, n: int) -> Step:
        request = GenerationRequest(
            id=f"{reply.message_id}@j{n}", messages=judge.messages(row.instruction(),
                                                                    reply.text),
            params=params, seed=derive_seed(cfg.seed, STAGE, reply.message_id, n),
            sample_index=n)
        provenance = Provenance(backend=backend.fingerprint, params=params, seed=request.seed,
                                sample_index=n, template=template.ref)

        def finish(outcome: Outcome) -> Judgment:
            run.count(outcome.source)
            return Judgment(
                id=request.id, response_id=reply.message_id, prompt_id=row.prompt_id,
                iteration=0, index=n, text=outcome.first.text, score=outcome.value,
                score_source=outcome.source,  # type: ignore[arg-type]
                parse_error=outcome.error, prob_score=outcome.prob_score,
                score_probs=outcome.probs, finish_reason=outcome.first.finish_reason,
                prompt_tokens=outcome.first.prompt_tokens,
                completion_tokens=outcome.first.completion_tokens, provenance=provenance)

        return judge.start(request, finish, lambda failure: run.failed(
            request.id, Step(request, finish), failure, template.ref))  # type: ignore[arg-type]

    def items() -> Iterator[Item]:
        for row in rows:
            for reply in row.ranked:
                for n in range(cfg.eft.judgments_per_reply):
                    yield Item(f"{reply.message_id}@j{n}", partial(start, row, reply, n))

    total = sum(len(r.ranked) for r in rows) * cfg.eft.judgments_per_reply
    return run.run(items, total=total, prompts=len(rows))


def agrees(ranks: list[int], scores: list[float | None]) -> bool:
    """Whether the judge's scores order the replies as the humans did: every pair with
    different ranks (0 = best) has a strictly higher score for the better one.

    >>> agrees([0, 1, 2], [4.0, 3.5, 1.0]), agrees([0, 1], [3.0, 3.0]), agrees([0, 0], [2.0, 5.0])
    (True, False, True)
    """
    if any(s is None for s in scores):
        return False
    for (ra, sa), (rb, sb) in combinations(zip(ranks, scores, strict=True), 2):
        if ra != rb and not ((ra < rb and sa > sb) or (rb < ra and sb > sa)):  # type: ignore[operator]
            return False
    return True


def decide(store: Store, selection: Selection) -> tuple[list[EFTDecision], list[dict[str, Any]]]:
    """The filter's decision per prompt, and the SFT examples of the kept prompts."""
    cfg: RunConfig = store.config
    usable = {"parsed", "forced"} if cfg.eft.use_forced else {"parsed"}
    judgments: dict[str, list[Judgment]] = defaultdict(list)
    for judgment in store.iter_records(JUDGMENTS):
        judgments[judgment.response_id].append(judgment)
    template = judge_template(store)
    judge = RubricJudge(template, ReadoutPolicy(), _NO_CAPS)
    decisions, examples = [], []
    for row in selection.rows:
        ranked = row.ranked
        means: list[float | None] = []
        for reply in ranked:
            scores = [j.score for j in judgments[reply.message_id]
                      if j.score is not None and j.score_source in usable]
            means.append(sum(scores) / len(scores) if scores else None)
        judged = sum(m is not None for m in means)
        keep = agrees([r.rank for r in ranked], means)  # type: ignore[misc]
        reason = ("scores order the replies as the humans ranked them" if keep else
                  f"{len(ranked) - judged} of {len(ranked)} replies without a score"
                  if judged < len(ranked) else "scores disagree with the human ranking")
        mine = []
        if keep:
            for reply in ranked:
                prompt = judge.messages(row.instruction(), reply.text)
                for j in judgments[reply.message_id]:
                    if j.score is None or j.score_source not in usable:
                        continue
                    target = j.text if j.score_source == "parsed" else (
                        j.text.rstrip() + SCORE_PREFILL + f"{j.score:g}")
                    mine.append({"id": j.id, "prompt": [m.model_dump() for m in prompt],
                                 "completion": [{"role": "assistant", "content": target}],
                                 "score": j.score, "score_source": j.score_source})
        examples += mine
        decisions.append(EFTDecision(
            id=row.prompt_id, kept=keep, reason=reason, replies=len(ranked),
            judged_replies=judged, human_ranks=tuple(int(r.rank) for r in ranked),  # type: ignore[arg-type]
            judge_means=tuple(means), examples=len(mine)))
    for row in selection.held_out:
        decisions.append(EFTDecision(
            id=row.prompt_id, kept=False, replies=len(row.ranked), judged_replies=0,
            reason="an evaluation prompt (judge evaluation, AlpacaEval or Arena-Hard): held "
            "out", human_ranks=tuple(int(r.rank) for r in row.ranked),  # type: ignore[arg-type]
            judge_means=tuple(None for _ in row.ranked)))
    if cfg.eft.balance:
        examples = balance(examples, cfg.seed)
    return decisions, examples


#: the filter only renders prompts; it calls no backend
_NO_CAPS = Capabilities(logprobs=False, max_top_logprobs=0, seeds=False)


def balance(examples: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """At most as many examples of each (rounded) score as of the second most frequent one.

    >>> rows = [{"id": str(k), "score": s} for k, s in enumerate([4] * 6 + [3] * 2 + [1])]
    >>> sorted(Counter(r["score"] for r in balance(rows, 0)).items())
    [(1, 1), (3, 2), (4, 2)]
    """
    by_score: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for example in examples:
        by_score[round(example["score"])].append(example)
    if len(by_score) < 2:
        return examples
    cap = sorted((len(v) for v in by_score.values()), reverse=True)[1]
    kept = []
    for score, rows in sorted(by_score.items()):
        rows = sorted(rows, key=lambda r: r["id"])
        random.Random(derive_seed(seed, "eft-balance", score)).shuffle(rows)
        kept += rows[:cap]
    return sorted(kept, key=lambda r: r["id"])


def run_eft(config: RunConfig, ranked: str | Path, out: str | Path, *,
            limit: int | None = None, progress: bool = True, redo: bool = False
            ) -> dict[str, Any]:
    """The whole stage: judgments, decisions, SFT; returns the summary (also in the
    manifest as ``iter_00/eft``). ``redo`` judges again (the judged texts changed)."""
    from metajudge.backends.serving import engine
    from metajudge.training.sft import sft_made_from, train_sft

    started = time.perf_counter()
    rows = load_ranked(ranked)
    store = Store.open(out, config)
    try:
        selection = select_prompts(rows, limit)
        if not selection.rows:
            raise ValueError(f"{ranked}: no prompt with two ranked replies outside the "
                             "evaluation sets")
        with engine(config.backend, config.backend.model, store.root) as backend:
            judged = run_eft_judgments(store, backend, selection.rows, progress=progress,
                                       redo=redo)
        log.info(judged.line())
        require_finished(judged)  # the filter and SFT must not run on partial scores
        decisions, examples = decide(store, selection)
        store.write_all(DECISIONS, decisions)
        (store.root / EXAMPLES).write_text("".join(json.dumps(e) + "\n" for e in examples))
        kept = sum(d.kept for d in decisions)
        if not examples:
            raise ValueError(f"no prompt's judgments agree with the human ranking ({kept} kept "
                             f"of {len(selection.rows)}); see {store.root / DECISIONS.filename}")
        result = train_sft(config.backend.model, examples, store.root, config,
                           progress=progress, made_from=sft_made_from(
                               config.backend.model, store.root / EXAMPLES, config))
        summary = {"stage": STAGE, "ranked_file": str(ranked), "prompts": len(selection.rows),
                   "held_out": len(selection.held_out), "too_few_replies": len(selection.too_few),
                   "kept": kept, "keep_rate": kept / len(selection.rows),
                   "examples": len(examples),
                   "example_scores": dict(Counter(round(e["score"]) for e in examples)),
                   "judgments": judged.requested, "sft_steps": result["steps"],
                   "seconds": time.perf_counter() - started, **{
                       f"final_{k}": v for k, v in result["final_metrics"].items()}}
        store.record_stage("iter_00/eft", summary)
        return summary
    finally:
        store.close()

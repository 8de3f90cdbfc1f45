"""Judge–human agreement on Open Assistant (SPEC §7): the paper's judge evaluation.

The judge scores every human-ranked reply of the first-turn OASST1 validation prompts (186
prompts, 541 replies; held out of every training pool) with the scoring template; agreement with
the human ranks is counted with and without judge ties, with the mean per-prompt Spearman.
With ``pairs``, every two replies of a prompt with different ranks are also judged pairwise in
both orders (the pairwise template), giving position consistency and pairwise agreement.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from itertools import combinations

import pandas as pd

from metajudge.analysis.agreement import ranked_agreement
from metajudge.analysis.bias import position_bias
from metajudge.backends.base import Backend
from metajudge.evaluation.benchmarks import RankedPrompt, oasst_ranked_prompts
from metajudge.evaluation.pairwise import Game, judge_games
from metajudge.evaluation.records import ReplyScore
from metajudge.judging.readout import readouts_not_run
from metajudge.judging.scorers import Outcome, ReadoutPolicy, RubricJudge
from metajudge.records import GenerationRequest, Provenance, SamplingParams
from metajudge.seeds import derive_seed
from metajudge.stages.judge import template_settings
from metajudge.stages.runner import Item, StageRun, Step
from metajudge.store import Store, evaluation_file
from metajudge.templates import load_template

SCORES = evaluation_file("scores")


def run_judge_eval(
    store: Store, judge: Backend, *, limit: int | None = None, pairs: bool = True,
    bootstrap_rounds: int = 1000, progress: bool = True,
) -> dict[str, object]:
    prompts = oasst_ranked_prompts()[:limit]
    scores = score_replies(store, judge, prompts, progress=progress)
    frame = pd.DataFrame([{"prompt_id": s.prompt_id, "rank": s.rank, "score": s.score,
                           "prob_score": s.prob_score, "source": s.score_source}
                          for s in scores.values()],
                         columns=["prompt_id", "rank", "score", "prob_score", "source"])
    metrics: dict[str, object] = {"judge": store.config.name,
                                  "prompts_requested": len(prompts),
                                  "replies": sum(len(p.replies) for p in prompts),
                                  "scored": int(frame["score"].notna().sum()),
                                  "forced_scores": int((frame["source"] == "forced").sum()),
                                  "unparsed_scores": int(frame["score"].isna().sum())}
    metrics.update(ranked_agreement(frame, bootstrap_rounds=bootstrap_rounds,
                                    seed=store.config.seed))
    weighted = frame.assign(prob_score=frame["prob_score"].astype(float))
    metrics["weighted_scored"] = int(weighted["prob_score"].notna().sum())
    if metrics["weighted_scored"]:  # SPEC §3: beside the sampled score, never instead of it
        agreement = ranked_agreement(weighted, score="prob_score",
                                     bootstrap_rounds=bootstrap_rounds, seed=store.config.seed)
        metrics.update({f"weighted_{k}": v for k, v in agreement.items()
                        if k.startswith(("agreement", "spearman", "judge_ties"))})
    if pairs:
        metrics.update(pairwise_checks(store, judge, prompts, progress=progress))
    store.write_json("metrics.json", metrics)
    return metrics


def score_replies(store: Store, judge: Backend, prompts: tuple[RankedPrompt, ...], *,
                  progress: bool = True) -> dict[str, ReplyScore]:
    """One judgment per reply by the loop's judge (:class:`RubricJudge`) with the scoring
    template: the last ``Score:`` parsed; else, with ``judging.forced_readout`` where the
    backend scores labels, the most probable of 0–5 after ``\nScore: `` (``forced``); else
    ``failed``, with the reason. With ``judging.probability_weighted`` each record also carries
    the probability-weighted score (SPEC §3), read where the score is written, or at the
    read-out step when forced."""
    config = store.config
    template = load_template(config.score_template)
    scorer = RubricJudge(template, ReadoutPolicy(config.judging.forced_readout,
                                                 config.judging.probability_weighted),
                         judge.capabilities)
    params = SamplingParams(temperature=config.judging.temperature, top_p=config.judging.top_p,
                            max_tokens=config.judging.max_tokens)
    run = StageRun(store, SCORES, judge, stage="judge scores", iteration=None,
                   settings={**template_settings(template), "params": params.model_dump(),
                             "forced_readout": config.judging.forced_readout,
                             "probability_weighted": config.judging.probability_weighted,
                             "seed": config.seed, **readouts_not_run(
                                 "judge scores", {
                                     "forced_readout": config.judging.forced_readout,
                                     "probability_weighted":
                                         config.judging.probability_weighted},
                                 judge.capabilities, judge.fingerprint)},
                   runner=config.runner, progress=progress, unit="reply")
    replies = {r.message_id: (p, r) for p in prompts for r in p.replies}

    def start(message_id: str) -> Step:
        prompt, reply = replies[message_id]
        request = GenerationRequest(
            id=message_id, messages=scorer.messages(prompt.prompt, reply.text), params=params,
            seed=derive_seed(config.seed, "judge-eval", message_id))

        def finish(outcome: Outcome) -> ReplyScore:
            run.count(outcome.source)
            return ReplyScore(
                id=message_id, prompt_id=prompt.prompt_id, rank=reply.rank,
                score=outcome.value, score_source=outcome.source,  # type: ignore[arg-type]
                prob_score=outcome.prob_score, readout_error=outcome.readout_error,
                parse_error=outcome.error,
                judgment=outcome.text, prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                provenance=Provenance(backend=judge.fingerprint, params=params,
                                      seed=request.seed, sample_index=0,
                                      template=template.ref))

        return scorer.start(request, finish, lambda failure: run.failed(
            message_id, Step(request, finish), failure, template.ref))  # type: ignore[arg-type]

    def items() -> Iterator[Item]:
        for message_id in replies:
            yield Item(message_id, partial(start, message_id))

    run.run(items, total=len(replies), prompts=len(prompts))
    return {s.id: s for s in store.iter_records(SCORES) if s.id in replies}


def pairwise_checks(store: Store, judge: Backend, prompts: tuple[RankedPrompt, ...], *,
                    progress: bool = True) -> dict[str, object]:
    """Every pair of differently ranked replies, judged in both orders: position consistency,
    first-position share, and agreement of the pairwise verdicts with the human ranking."""
    games = []
    for prompt in prompts:
        for x, y in combinations(prompt.replies, 2):
            if x.rank == y.rank:
                continue
            better, worse = (x, y) if x.rank < y.rank else (y, x)
            pair = f"{prompt.prompt_id}:{better.message_id}:{worse.message_id}"
            for order, shown in (("1", "A"), ("2", "B")):
                games.append(Game(id=f"{pair}@{order}", item_id=pair, instruction=prompt.prompt,
                                  model_answer=better.text, baseline_answer=worse.text,
                                  model_position=shown,  # type: ignore[arg-type]
                                  model=better.message_id, baseline=worse.message_id))
    judged = judge_games(store, judge, games, name="pair_games", progress=progress)
    rows = [{"pair_id": g.item_id, "swapped": g.model_position == "B",
             "winner": None if g.verdict is None else "tie" if g.verdict == "A=B"
             else "first" if g.verdict.startswith("A") else "second",
             "better_won": g.model_outcome()} for g in judged.values()]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return {"pair_games": 0}
    position = position_bias(frame)
    outcome = frame["better_won"]
    decided = outcome.dropna()
    return {
        "pair_games": len(frame),
        "pair_no_verdict": int(outcome.isna().sum()),
        "pairwise_agreement": float((outcome == 1.0).mean()),
        "pairwise_agreement_without_ties": float((decided[decided != 0.5] == 1.0).mean())
        if (decided != 0.5).any() else None,
        "position_consistency": position["consistency"],
        "first_share": position["first_share"],
        "preference_fairness": position["preference_fairness"],
        "pairs_both_orders": position["pairs"],
    }

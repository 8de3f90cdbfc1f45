"""Judge–human agreement on Open Assistant (SPEC §7): the paper's judge evaluation.

The judge scores every human-ranked reply of the first-turn OASST1 validation prompts (186
prompts, 541 replies; held out of every training pool) with the scoring template; agreement with
the human ranks is counted with and without judge ties, with the mean per-prompt Spearman.
With ``pairs``, every two replies of a prompt with different ranks are also judged pairwise in
both orders (the pairwise template), giving position consistency and pairwise agreement.
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from metajudge.analysis.agreement import ranked_agreement
from metajudge.analysis.bias import position_bias
from metajudge.backends.base import Backend
from metajudge.evaluation.benchmarks import RankedPrompt, oasst_ranked_prompts
from metajudge.evaluation.pairwise import Game, judge_games
from metajudge.evaluation.records import ReplyScore
from metajudge.evaluation.workdir import EvalDir
from metajudge.judging.judge import forced_readouts
from metajudge.judging.parse import parse_score
from metajudge.judging.readout import (
    SCORE_LABELS,
    SCORE_PREFILL,
    TOP_K,
    expected_score,
    most_probable_score,
    probability_weighted_score,
)
from metajudge.records import (
    Completion,
    FailedRequest,
    GenerationRequest,
    GenerationResult,
    Message,
    Provenance,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stage import StagePass
from metajudge.templates import load_template

SCORES = "scores"


def run_judge_eval(
    workdir: EvalDir, judge: Backend, *, limit: int | None = None, pairs: bool = True,
    bootstrap_rounds: int = 1000, progress: bool = True,
) -> dict[str, object]:
    prompts = oasst_ranked_prompts()[:limit]
    scores = score_replies(workdir, judge, prompts, progress=progress)
    frame = pd.DataFrame([{"prompt_id": s.prompt_id, "rank": s.rank, "score": s.score,
                           "prob_score": s.prob_score, "source": s.score_source}
                          for s in scores.values()],
                         columns=["prompt_id", "rank", "score", "prob_score", "source"])
    metrics: dict[str, object] = {"judge": workdir.config.name,
                                  "prompts_requested": len(prompts),
                                  "replies": sum(len(p.replies) for p in prompts),
                                  "scored": int(frame["score"].notna().sum()),
                                  "forced_scores": int((frame["source"] == "forced").sum()),
                                  "unparsed_scores": int(frame["score"].isna().sum())}
    metrics.update(ranked_agreement(frame, bootstrap_rounds=bootstrap_rounds,
                                    seed=workdir.config.seed))
    weighted = frame.assign(prob_score=frame["prob_score"].astype(float))
    metrics["weighted_scored"] = int(weighted["prob_score"].notna().sum())
    if metrics["weighted_scored"]:  # SPEC §3: beside the sampled score, never instead of it
        agreement = ranked_agreement(weighted, score="prob_score",
                                     bootstrap_rounds=bootstrap_rounds, seed=workdir.config.seed)
        metrics.update({f"weighted_{k}": v for k, v in agreement.items()
                        if k.startswith(("agreement", "spearman", "judge_ties"))})
    if pairs:
        metrics.update(pairwise_checks(workdir, judge, prompts, progress=progress))
    workdir.write_json("metrics.json", metrics)
    return metrics


def score_replies(workdir: EvalDir, judge: Backend, prompts: tuple[RankedPrompt, ...], *,
                  progress: bool = True) -> dict[str, ReplyScore]:
    """One judgment per reply with the scoring template. A judgment without a parseable score gets
    the loop's forced read-out where the backend allows it (prefill and log-probabilities): its
    own text plus ``Score: `` is continued by one token and the most probable of 0–5 is the
    score (``score_source="forced"``); otherwise it is ``failed``, with the reason. Where the
    backend gives log-probabilities, each record also carries the probability-weighted score
    (SPEC §3), read where the score is written, or at the read-out step when forced."""
    config = workdir.config
    template = load_template(config.score_template)
    logprobs = judge.capabilities.logprobs
    params = SamplingParams(temperature=config.judging.temperature, top_p=config.judging.top_p,
                            max_tokens=config.judging.max_tokens, logprobs=logprobs,
                            top_logprobs=TOP_K if logprobs else 0)
    done = {s.id: s for s in workdir.read(SCORES, ReplyScore)}
    replies = {r.message_id: (p, r) for p in prompts for r in p.replies}

    def request(message_id: str) -> GenerationRequest:
        prompt, reply = replies[message_id]
        return GenerationRequest(
            id=message_id, messages=(Message(role="user", content=template.render(
                instruction=prompt.prompt, response=reply.text)),),
            params=params, seed=derive_seed(config.seed, "judge-eval", message_id))

    todo = [request(m) for m in replies if m not in done]
    run = StagePass("judge scores", 1, len(prompts), len(replies), len(replies) - len(todo),
                    progress=progress, unit="reply")
    unparsed: list[tuple[GenerationRequest, Completion, str]] = []
    can_force = judge.capabilities.prefill and judge.capabilities.logprobs
    with workdir.appender(SCORES) as out, workdir.appender(f"{SCORES}.failures") as failed:

        def write(req: GenerationRequest, completion: Completion, value: float | None,
                  source: str, error: str | None, weighted: float | None) -> None:
            prompt, reply = replies[req.id]
            record = ReplyScore(
                id=req.id, prompt_id=prompt.prompt_id, rank=reply.rank, score=value,
                score_source=source if value is not None else "failed",  # type: ignore[arg-type]
                prob_score=weighted,
                parse_error=error, judgment=completion.text,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                provenance=Provenance(backend=judge.fingerprint, params=req.params,
                                      seed=req.seed, sample_index=0, template=template.ref))
            out.write(record)
            done[req.id] = record
            run.finished(True)

        def fail(req: GenerationRequest, result: GenerationResult) -> None:
            assert not isinstance(result, Completion)
            failed.write(FailedRequest(id=req.id, stage="judge-eval", iteration=1, failure=result,
                                       provenance=Provenance(backend=judge.fingerprint,
                                                             params=req.params, seed=req.seed,
                                                             sample_index=0,
                                                             template=template.ref)))
            run.finished(False)

        def on_first(index: int, result: GenerationResult) -> None:
            req = todo[index]
            run.tokens(result)
            if not isinstance(result, Completion):
                fail(req, result)
                return
            value, error = parse_score(result.text)
            if value is None and can_force:
                unparsed.append((req, result, error or ""))
            else:
                readout = probability_weighted_score(result)
                write(req, result, value, "parsed", error, readout[0] if readout else None)

        if todo:
            run.count_call()
            judge.generate(todo, on_result=on_first)

        def on_readout(index: int, dist: tuple[float, ...] | None, note: str | None) -> None:
            req, completion, error = unparsed[index]
            if dist is None:
                write(req, completion, None, "failed", f"{error}; forced read-out: {note}", None)
            else:
                write(req, completion, most_probable_score(dist), "forced", error,
                      expected_score(dist))

        if unparsed:
            forced_readouts(judge, run, unparsed, SCORE_PREFILL, SCORE_LABELS, on_readout)
    summary = run.finish()
    summary.extra["forced"] = len(unparsed)
    workdir.record_stage(summary)
    return {m: done[m] for m in replies if m in done}


def pairwise_checks(workdir: EvalDir, judge: Backend, prompts: tuple[RankedPrompt, ...], *,
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
    judged = judge_games(workdir, judge, games, name="pairs", progress=progress)
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

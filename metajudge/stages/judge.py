"""Stage ``judge``: N judgments per response with the additive 5-point rubric (SPEC §2–§3).

    metajudge judge RUN_DIR [--iteration 1]

Responses are read one at a time and their judge requests built as the runner asks for them.
Each judgment keeps its raw text; its score is the last ``Score:`` parsed, else (with
``judge.forced_readout``) the most likely score token after ``\\nScore: `` is appended to the
judgment, else it is recorded as failed with the reason. With ``judge.complete_verdict`` that
read-out's score is also written into the judgment: ``completed_text`` is the text, ``\\nScore: ``
and the score, and the source is ``completed`` (such a judgment carries its verdict and may be a
judge pair's chosen text). With ``judge.probability_weighted`` and a backend that scores
labels, the probability-weighted score is recorded beside the sampled one: one label-scoring
request per judgment, at its last ``Score:``.

With ``judge.adaptive`` (SPEC §5a) the judgments are asked for in rounds
(:func:`adaptive_rounds`), each record saying which round and rule asked for it; with
an audit (``judge.audit_share``, or ``meta_judge.audit_share`` if larger: one sample) the
audited prompts then get the rest of the full procedure (rule ``audit``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from metajudge.backends.base import Backend, sha256_text
from metajudge.judging.adaptive import judge_asks
from metajudge.judging.readout import readouts_not_run
from metajudge.judging.scorers import Outcome, ReadoutPolicy, RubricJudge
from metajudge.records import (
    GenerationRequest,
    Judgment,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stages import adaptive
from metajudge.stages.runner import Item, StageRun, StageSummary, Step
from metajudge.store import JUDGMENTS, PROMPTS, RESPONSES, Store
from metajudge.templates import Template, load_template

STAGE = "judge"


def judge_template(store: Store) -> Template:
    return load_template(store.config.judge.template or "judge")


def template_settings(template: Template) -> dict[str, Any]:
    """What a stage records of its template: name@version, content hash and the whole
    definition (so later stages can rebuild prompts from the template actually used)."""
    return {"template": template.ref, "template_sha256": sha256_text(template.template),
            "template_definition": template.model_dump(mode="json")}


def recorded_judge_template(store: Store, iteration: int) -> Template:
    """The judge template the iteration's judgments were made with (the current one for runs
    made before settings were recorded)."""
    settings = store.settings(JUDGMENTS, iteration)
    if settings and "template_definition" in settings:
        return Template.model_validate(settings["template_definition"])
    return judge_template(store)


def run_judge(store: Store, backend: Backend, iteration: int = 1, *, progress: bool = True,
              redo: bool = False) -> StageSummary:
    """Judge every response of an iteration N times; resumable like every stage."""
    cfg = store.config.judge
    if not store.path(RESPONSES, iteration).is_file():
        raise FileNotFoundError(f"{store.path(RESPONSES, iteration)}: no responses to judge; "
                                "run `metajudge generate` first")
    template = judge_template(store)
    judge = RubricJudge(template, ReadoutPolicy(cfg.forced_readout, cfg.probability_weighted,
                                                cfg.complete_verdict), backend.capabilities)
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens)
    settings = {**template_settings(template), "judgments_per_response":
                cfg.judgments_per_response, "params": params.model_dump(),
                "forced_readout": cfg.forced_readout,
                "probability_weighted": cfg.probability_weighted,
                "seed": store.config.seed,
                # recorded when on only: runs made before the switch resume unchanged
                **({"complete_verdict": True} if cfg.complete_verdict else {}),
                # what did not run for want of label scoring (warned once), by name
                **readouts_not_run(STAGE, {"forced_readout": cfg.forced_readout,
                                           "probability_weighted": cfg.probability_weighted,
                                           "complete_verdict": cfg.complete_verdict},
                                   backend.capabilities, backend.fingerprint),
                # recorded when on only, like complete_verdict
                **(adaptive.judge_settings(store.config, iteration) if cfg.adaptive else {})}
    run = StageRun(store, JUDGMENTS, backend, stage=STAGE, iteration=iteration,
                   settings=settings, runner=store.config.runner, progress=progress,
                   unit="judgment", redo=redo, inputs=(RESPONSES,))

    def start(response: Response, n: int, asked: tuple[int, str] | None = None) -> Step:
        request = GenerationRequest(
            id=f"{response.id}@j{n}", messages=judge.messages(response.instruction,
                                                              response.text),
            params=params, seed=derive_seed(store.config.seed, STAGE, iteration, response.id, n),
            sample_index=n)
        provenance = Provenance(backend=backend.fingerprint, params=params, seed=request.seed,
                                sample_index=n, template=template.ref)

        def finish(outcome: Outcome) -> Judgment:
            run.count(outcome.source)
            run.count("prob_weighted", outcome.prob_score is not None)
            run.count("readout_failed", outcome.readout_error is not None)
            first = outcome.first
            return Judgment(
                id=request.id, response_id=response.id, prompt_id=response.prompt_id,
                iteration=iteration, index=n, text=first.text,
                completed_text=outcome.completed_text, score=outcome.value,
                score_source=outcome.source,  # type: ignore[arg-type]
                parse_error=outcome.error, prob_score=outcome.prob_score,
                score_probs=outcome.probs, readout_error=outcome.readout_error,
                finish_reason=first.finish_reason,
                prompt_tokens=first.prompt_tokens, completion_tokens=first.completion_tokens,
                provenance=provenance, round=asked[0] if asked else None,
                rule=asked[1] if asked else None)  # type: ignore[arg-type]

        return judge.start(request, finish, lambda failure: run.failed(
            request.id, Step(request, finish), failure, template.ref,  # type: ignore[arg-type]
            asked))

    count = cfg.judgments_per_response
    total = store.count(RESPONSES, iteration) * count
    if cfg.adaptive:
        return run.run(total=total, prompts=store.count(PROMPTS, iteration),
                       rounds=adaptive_rounds(store, iteration, start))

    def items() -> Iterator[Item]:
        for response in store.iter_records(RESPONSES, iteration):
            for n in range(count):
                yield Item(f"{response.id}@j{n}", partial(start, response, n))

    return run.run(items, total=total, prompts=store.count(PROMPTS, iteration))


def adaptive_rounds(store: Store, iteration: int,
                    start: Callable[[Response, int, tuple[int, str]], Step]
                    ) -> Iterator[list[Item]]:
    """The rounds of ``judge.adaptive`` (SPEC §5a), replayed from the records: each round's
    judgments per prompt are :func:`metajudge.judging.adaptive.judge_asks` of what the
    rounds before gave; the meta-judge's response is the stage's own selection
    (:func:`metajudge.stages.meta_judge.select_responses`) on the initial judgments. After
    the last round, the audited prompts' responses get the rest of their N judgments (rule
    ``audit``), which no adaptive decision reads."""
    from metajudge.stages.meta_judge import select_responses

    config = store.config
    rule, (rho, limit) = adaptive.judge_rule(config), adaptive.actor_rule(config, iteration)
    members: dict[str, list[tuple[int, str, int, int]]] = defaultdict(list)
    for offset, r in store.iter_with_offsets(RESPONSES, iteration):
        members[r.prompt_id].append((r.provenance.sample_index, r.id, offset, len(r.text)))
    for group in members.values():
        group.sort()
    state: dict[str, list[float | None]] = {rid: [] for g in members.values()
                                             for _, rid, _, _ in g}

    def item(offset: int, rid: str, n: int, asked: tuple[int, str]) -> Item:
        return Item(f"{rid}@j{n}", lambda: start(store.read_at(RESPONSES, offset, iteration),
                                                 n, asked))

    def selection(prompt_id: str, group: list[tuple[int, str, int, int]]) -> int | None:
        initial = [(rid, [v for v in state[rid][:rule.initial] if v is not None])
                   for _, rid, _, _ in group]
        pick = select_responses({prompt_id: initial}, config.seed, iteration)[0].response_id
        return next(k for k, (_, rid, _, _) in enumerate(group) if rid == pick) \
            if pick is not None else None

    round_ = 0
    while True:
        asks: dict[str, tuple[str, int, int, str]] = {}
        for prompt_id, group in members.items():
            scores = [state[rid] for _, rid, _, _ in group]
            for ask in judge_asks(scores, [length for *_, length in group], rho, limit, rule,
                                  0, partial(selection, prompt_id, group)):
                _, rid, offset, _ = group[ask.target]  # type: ignore[index]
                for n in range(len(state[rid]), len(state[rid]) + ask.count):
                    asks[f"{rid}@j{n}"] = (rid, offset, n, ask.rule)
        if not asks:
            break
        yield [item(offset, rid, n, (round_, why)) for rid, offset, n, why in asks.values()]
        got = adaptive.answers(store, JUDGMENTS, iteration, asks, lambda j: j.score)
        if len(got) < len(asks):
            return  # retryable failures remain: the runner stops, a rerun resumes here
        for key, (rid, *_) in sorted(asks.items(), key=lambda a: a[1][2]):
            state[rid].append(got[key])
        round_ += 1
    share = adaptive.audit_share(config)  # the meta-judge's sample too (SPEC §5a)
    audit = [item(offset, rid, n, (round_, "audit"))
             for prompt_id, group in members.items()
             if adaptive.audited(config.seed, iteration, prompt_id, share)
             for _, rid, offset, _ in group
             for n in range(len(state[rid]), config.judge.judgments_per_response)]
    if audit:
        yield audit

"""Reading scores and choices from a label distribution (SPEC §3).

The *probability-weighted score* is the expected score under the model's next-token distribution
at the position where the judgment writes its score, renormalised over the allowed score tokens:
one label-scoring request per judgment, continuing the judgment up to its last ``Score:``
(:func:`score_prefix`). The *forced read-out* appends ``\\nScore: `` (or ``\\nWinner:
Judgment``) to a judgment without a parseable answer and reads the same distribution for the
next token.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from metajudge.judging.parse import score_number_offset
from metajudge.records import BackendFingerprint, Capabilities

log = logging.getLogger(__name__)

SCORE_LABELS = ("0", "1", "2", "3", "4", "5")
#: MT-Bench's ratings read digit by digit: 1–9 first, then "0" or "]" after a leading "1"
RATING_LABELS = ("1", "2", "3", "4", "5", "6", "7", "8", "9")
TEN_LABELS = ("0", "]")
RATING_PREFILL = "\n\nRating: [["
CHOICE_LABELS = ("A", "B")
SCORE_PREFILL = "\nScore: "
# no trailing space: tokenizers usually merge " A" into one token
WINNER_PREFILL = "\nWinner: Judgment"


def expected_score(distribution: Sequence[float]) -> float:
    """The mean score under a distribution over 0..5.

    >>> expected_score((0, 0, 0, 0, 0.75, 0.25))
    4.25
    """
    return float(sum(p * int(label) for p, label in zip(distribution, SCORE_LABELS,
                                                       strict=True)))


def most_probable_score(distribution: Sequence[float]) -> float:
    """The forced read-out's score: the most probable of 0..5, the lower one on a tie.

    >>> most_probable_score((0, 0.4, 0, 0, 0.4, 0.2))
    1.0
    """
    best = max(range(len(distribution)), key=lambda k: (distribution[k], -k))
    return float(SCORE_LABELS[best])


def sampled_label(distribution: Sequence[float], temperature: float, top_p: float,
                  seed: int) -> int:
    """The index of the label a sampler at ``temperature`` and ``top_p`` draws from the label
    distribution, seeded (the same request draws the same label on every rerun); greedy (the
    most probable, the first on a tie) at temperature 0. Verdict completion writes this label:
    the verdict line the model's own sampler would have written, so a meta-judge that prefers
    the first-shown judgment 70/30 keeps that 70/30 instead of becoming 100/0.

    >>> sampled_label((0.1, 0.6, 0.3), 0.0, 1.0, seed=7)
    1
    >>> sampled_label((0.97, 0.03), 1.0, 0.95, seed=7)  # top-p keeps only the first
    0
    >>> draws = [sampled_label((0.7, 0.3), 1.0, 1.0, seed=s) for s in range(2000)]
    >>> 0.25 < sum(draws) / len(draws) < 0.35
    True
    """
    probs = [max(float(p), 0.0) for p in distribution]
    best = max(range(len(probs)), key=lambda k: (probs[k], -k))
    if temperature <= 0 or sum(probs) <= 0:
        return best
    peak = max(probs)
    weights = [(p / peak) ** (1.0 / temperature) if p > 0 else 0.0 for p in probs]
    total = sum(weights)
    order = sorted(range(len(weights)), key=lambda k: (-weights[k], k))
    kept, mass = [], 0.0
    for k in order:  # the smallest set whose mass reaches top_p, as vLLM's and HF's samplers
        kept.append(k)
        mass += weights[k] / total
        if mass >= top_p:
            break
    draw = random.Random(f"verdict:{seed}").random() * sum(weights[k] for k in kept)
    for k in kept:
        draw -= weights[k]
        if draw < 0:
            return k
    return kept[-1]


def score_prefix(text: str) -> str | None:
    """The judgment up to where its last score's number starts (None when the text has no
    ``Score:`` with a number). The whitespace before the number stays: most tokenizers of
    current models (Llama 3, SmolLM2) write it as its own token, so the number's distribution is
    read after it; backends whose tokenizer merges " 4" into one token read before it.

    >>> score_prefix("Relevant and clear.\\nScore: 4")
    'Relevant and clear.\\nScore: '
    >>> score_prefix("Score: **3** overall")
    'Score: **'
    >>> score_prefix("no score here") is None
    True
    """
    offset = score_number_offset(text)
    return None if offset is None else text[:offset]


def most_probable_rating(first: Sequence[float], after_one: Sequence[float] | None) -> float:
    """MT-Bench's forced read-out: the most probable rating 1–10, from the distribution of the
    first digit over 1..9 and, where "1" leads, that of the next token ("0" for 10, "]" for 1).
    P(10) and P(1) share the first digit's mass, so neither can lead unless "1" does.

    >>> most_probable_rating((0.1, 0.6, 0.3, 0, 0, 0, 0, 0, 0), None)
    2.0
    >>> most_probable_rating((0.7, 0.3, 0, 0, 0, 0, 0, 0, 0), (0.8, 0.2))
    10.0
    >>> most_probable_rating((0.5, 0.3, 0.2, 0, 0, 0, 0, 0, 0), (0.5, 0.5))
    2.0
    """
    best = max(range(len(first)), key=lambda k: (first[k], -k))
    if best != 0 or after_one is None:
        return float(RATING_LABELS[best])
    ratings = {float(k + 1): p for k, p in enumerate(first) if k}
    ratings[10.0] = first[0] * after_one[0]
    ratings[1.0] = first[0] * after_one[1]
    return max(sorted(ratings), key=lambda r: ratings[r])


def readouts_not_run(stage: str, requested: Mapping[str, bool], capabilities: Capabilities,
                     backend: BackendFingerprint) -> dict[str, Any]:
    """What a stage adds to its settings about read-outs it was asked for but cannot make.

    A read-out needs a backend that scores labels (prefill and log-probabilities; ``transformers
    serve`` gives no log-probabilities, and ``openai.prefill``/``openai.logprobs`` say what a
    server can do). When some requested read-out cannot run, this warns once, naming the stage,
    the backend and the settings, and returns ``{"readouts_not_run": [names]}`` to record in the
    stage's settings: the file then says the read-outs did not run, and a resume on a backend
    that can make them (or the other way round) is refused by that name instead of mixing
    judgments with and without read-outs in one file. Returns ``{}`` when every requested
    read-out runs, so the settings of such runs are unchanged, except that read-outs guided by
    structured outputs (``Capabilities.guided``: the continuation is made to write the prefill's
    trailing whitespace) add ``{"readouts_guided": True}``: they read where an unguided read-out
    may stop, so the two are not mixed in one file.

    >>> fp = BackendFingerprint(kind="openai", model="m", server_url="http://h:1/v1")
    >>> readouts_not_run("judge", {"forced_readout": True, "probability_weighted": False},
    ...                  Capabilities(logprobs=False, max_top_logprobs=0, seeds=True), fp)
    {'readouts_not_run': ['forced_readout']}
    >>> readouts_not_run("judge", {"forced_readout": True}, Capabilities(
    ...     logprobs=True, max_top_logprobs=20, seeds=True, prefill=True, label_scores=True), fp)
    {}
    """
    if capabilities.label_scores:
        guided = capabilities.guided and any(requested.values())
        return {"readouts_guided": True} if guided else {}
    missing = sorted(name for name, on in requested.items() if on)
    if not missing:
        return {}
    where = f" at {backend.server_url}" if backend.server_url else ""
    log.warning(
        "%s: %s asked for, but backend %s%s cannot score labels (it needs prefill and "
        "log-probabilities: vLLM or SGLang with openai.prefill and openai.logprobs; transformers "
        "serve gives no log-probabilities). These read-outs do not run: judgments without a "
        "parsed verdict are recorded as failed, and no label probabilities are recorded; the "
        "stage's settings file says so (readouts_not_run)", stage, ", ".join(missing),
        backend.kind, where)
    return {"readouts_not_run": missing}

"""A synthetic actor, judge and meta-judge with a stated model, for paper-scale judging runs made
by the real stages on a 2-core machine (issue 28's workload; benchmarks/adaptive_judging.py).

A user backend (``metajudge.backends.Backend``) named in a config as

    backend:
      kind: synthetic_judge:SyntheticJudge        # with benchmarks/ on PYTHONPATH
      model: "synthetic/noise=1.0,bias=0.5"       # the judge model's parameters (below)

Every answer is a pure function of the request (its text and seed), so a rerun, a resumed stage
or another process gives the same answer, and the parameters sit in the model name, which every
record's provenance carries. The model:

- **Responses.** A prompt has a difficulty effect ``d ~ N(0, prompt_sd)`` (a hash of its
  instruction); a response's latent quality is ``q = mean + d + response_sd·z`` with ``z`` a
  hash of its opening (first 120 characters). Its length (characters) is
  ``N(length_mean + length_slope·(q − mean), length_sd)`` clipped to [200, 4000].
- **Judgments.** Score ``s = clip(round(q + e), 0, 5)``, ``e ~ N(0, noise)`` drawn from the
  request's seed and ``judge_seed``; with probability ``judge_fail`` the text ends without a
  ``Score:`` line (a parse failure). A judgment's own latent quality is
  ``g = −|s − q| + quality_sd·u`` with ``u`` a hash of its text: how close its score is to the
  truth, plus what else makes a judgment follow the rubric.
- **Meta-judgments.** For judgments A (shown first) and B, ``P(A wins) = σ(bias + meta_slope·
  (g_A − g_B))`` (Bradley–Terry with a first-position bias in logits), drawn from the request's
  seed and ``meta_seed``; with probability ``meta_fail`` no winner line.

``judge_seed`` / ``meta_seed`` draw new judgment or verdict samples for the same prompts and
responses (the noise floor's second full run). Token counts are characters / 4.

    PYTHONPATH=benchmarks metajudge run configs/paper.yaml --out runs/synth \\
        --set backend.kind=synthetic_judge:SyntheticJudge --set backend.model=synthetic/noise=1
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from statistics import NormalDist
from typing import Any

from metajudge.backends.base import Backend
from metajudge.config import BackendConfig
from metajudge.records import (
    BackendFingerprint,
    Capabilities,
    Completion,
    GenerationRequest,
)

_NORMAL = NormalDist()
_WORDS = ("the answer covers question main points explains clearly each step example detail "
          "context reason because however also which response rubric criterion relevant "
          "useful complete direct organised accurate concise expert engaging tailored "
          "information partial missing error structure helpful").split()


@dataclass(frozen=True)
class JudgeModel:
    """The synthetic judge's parameters (defaults: benchmarks/adaptive_judging.md says why)."""

    mean: float = 3.0            # mean latent quality (score scale 0..5)
    prompt_sd: float = 0.7       # between-prompt sd of latent quality
    response_sd: float = 0.6     # within-prompt (between-response) sd of latent quality
    noise: float = 1.0           # sd of a judgment's score noise, before rounding
    quality_sd: float = 0.5      # judgment quality beyond its score's accuracy
    bias: float = 0.5            # meta-judge first-position bias, logits
    meta_slope: float = 1.0      # meta-judge discrimination, logits per unit of g_A − g_B
    judge_fail: float = 0.01     # share of judgments without a Score: line
    meta_fail: float = 0.01      # share of meta-judgments without a winner line
    length_mean: float = 1900.0  # response characters (the paper's seed model: 1,899)
    length_sd: float = 500.0
    length_slope: float = 150.0  # characters per unit of latent quality
    judge_seed: int = 0
    meta_seed: int = 0

    @classmethod
    def parse(cls, name: str) -> JudgeModel:
        """``synthetic/noise=1.0,bias=0.5`` → the model (unknown keys are refused by name).

        >>> JudgeModel.parse("synthetic/noise=1.5,judge_seed=1").noise
        1.5
        """
        model = cls()
        _, _, spec = name.partition("/")
        known = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, value = item.partition("=")
            if key not in known:
                raise ValueError(f"synthetic judge: unknown parameter {key!r} in {name!r}; "
                                 f"known: {sorted(known)}")
            model = replace(model, **{key: int(value) if key.endswith("_seed")
                                      else float(value)})
        return model

    def name(self) -> str:
        """The model name that gives back these parameters (non-defaults only)."""
        default = JudgeModel()
        changed = [f"{f.name}={getattr(self, f.name):g}" for f in fields(self)
                   if getattr(self, f.name) != getattr(default, f.name)]
        return "synthetic/" + ",".join(changed) if changed else "synthetic"


def _unit(*parts: object) -> float:
    """A uniform draw in (0, 1) from a hash of the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64


def _z(*parts: object) -> float:
    return _NORMAL.inv_cdf(_unit(*parts))


def _between(text: str, start: str, end: str) -> str:
    """The text between the first ``start`` and the last ``end`` after it."""
    i = text.index(start) + len(start)
    return text[i:text.rindex(end)]


#: characters of a response's opening that its latent quality is a hash of
OPENING = 120
_SCORE = re.compile(r"Score: (\d)\s*$")


class SyntheticJudge(Backend):
    """Actor, judge and meta-judge of :class:`JudgeModel` (see the module docstring)."""

    kind = "synthetic"

    def __init__(self, config: BackendConfig | None = None, *, model: JudgeModel | None = None):
        self.model = model or JudgeModel.parse(config.model if config is not None
                                               else "synthetic:")
        self.counts = {"generate": 0, "judge": 0, "meta": 0}

    @property
    def fingerprint(self) -> BackendFingerprint:
        return BackendFingerprint(kind=self.kind, model=self.model.name())

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(logprobs=False, max_top_logprobs=0, seeds=True)

    def stats(self) -> dict[str, Any]:
        return {"requests": dict(self.counts)}

    def generate(self, requests: Sequence[GenerationRequest], on_result: Any = None) -> list:
        results: list[Any] = []
        for index, request in enumerate(requests):
            prompt = request.messages[-1].content
            if "<judgment_a>" in prompt:
                self.counts["meta"] += 1
                text = self.meta_judgment(prompt, request.seed)
            elif "<response>" in prompt and "Score:" in prompt:
                self.counts["judge"] += 1
                text = self.judgment(prompt, request.seed)
            else:
                self.counts["generate"] += 1
                text = self.response(prompt, request.seed)
            result = Completion(request_id=request.id, text=text, finish_reason="stop",
                                prompt_tokens=len(prompt) // 4,
                                completion_tokens=max(1, len(text) // 4))
            results.append(result)
            if on_result is not None:
                on_result(index, result)
        return results

    # ---------------------------------------------------------------- the stated model
    def quality(self, instruction: str, response: str) -> float:
        """A response's latent quality q."""
        m = self.model
        return (m.mean + m.prompt_sd * _z("prompt", instruction.strip())
                + m.response_sd * _z("response", response.strip()[:OPENING]))

    def judgment_quality(self, q: float, judgment: str) -> float | None:
        """A judgment's latent quality g (None without a score)."""
        found = _SCORE.search(judgment)
        if found is None:
            return None
        return -abs(int(found.group(1)) - q) + self.model.quality_sd * _z("judgment",
                                                                          judgment.strip())

    def response(self, instruction: str, seed: int) -> str:
        m = self.model
        rng = random.Random(f"response:{seed}")
        body = _words(rng, 60)
        q = self.quality(instruction, body)
        length = min(4000, max(200, round(rng.gauss(m.length_mean + m.length_slope
                                                     * (q - m.mean), m.length_sd))))
        text = body
        while len(text) < length:
            text += " " + _words(rng, 40)
        return text[:length].rstrip() + "."  # the opening (and so q) is body's

    def judgment(self, prompt: str, seed: int) -> str:
        m = self.model
        instruction = _between(prompt, "<question>\n", "\n</question>")
        response = _between(prompt, "<response>\n", "\n</response>")
        q = self.quality(instruction, response)
        rng = random.Random(f"judgment:{seed}:{m.judge_seed}")
        score = min(5, max(0, round(q + rng.gauss(0.0, m.noise))))
        body = _words(rng, rng.randint(70, 130))
        if rng.random() < m.judge_fail:
            return body + ". The response is reasonable overall."
        return f"{body}.\nScore: {score}"

    def meta_judgment(self, prompt: str, seed: int) -> str:
        m = self.model
        instruction = _between(prompt, "<question>\n", "\n</question>")
        response = _between(prompt, "<response>\n", "\n</response>")
        q = self.quality(instruction, response)
        a = self.judgment_quality(q, _between(prompt, "<judgment_a>\n", "\n</judgment_a>"))
        b = self.judgment_quality(q, _between(prompt, "<judgment_b>\n", "\n</judgment_b>"))
        rng = random.Random(f"meta:{seed}:{m.meta_seed}")
        logit = m.bias + m.meta_slope * ((a if a is not None else -3.0)
                                         - (b if b is not None else -3.0))
        first = rng.random() < 1.0 / (1.0 + math.exp(-logit))
        body = _words(rng, rng.randint(40, 90))
        if rng.random() < m.meta_fail:
            return body + ". Both judgments have merits."
        return f"{body}.\nWinner: Judgment {'A' if first else 'B'}"


#: a fixed stream of words that texts are cut from (cutting is ~10x cheaper than drawing words)
_CORPUS = " ".join(random.Random(0).choices(_WORDS, k=200_000))


def _words(rng: random.Random, n: int) -> str:
    """About ``n`` words cut from the corpus at a random place (word-aligned)."""
    start = _CORPUS.index(" ", rng.randrange(len(_CORPUS) - 10 * n - 20)) + 1
    end = _CORPUS.rindex(" ", start, start + 8 * n)
    return _CORPUS[start:end]

"""A user backend for the explorer's browser tests: the instant backend, except that a response
repeats the user's instruction, so a prompt holding markup gives responses holding it too."""

from __future__ import annotations

from instant_backend import InstantBackend

from metajudge.records import GenerationRequest


class EchoingInstantBackend(InstantBackend):
    kind = "echoing-instant"

    @staticmethod
    def _answer(request: GenerationRequest) -> str:
        text = InstantBackend._answer(request)
        prompt = request.messages[-1].content
        if "<judgment_a>" in prompt or ("Score:" in prompt and "<response>" in prompt):
            return text  # a judgment or a meta-judgment
        return f"You asked: {prompt}\n\n{text[: len(text) // 3]}"

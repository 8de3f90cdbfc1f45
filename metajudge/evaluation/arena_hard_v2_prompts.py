"""Arena-Hard v2.0's judge prompts, verbatim from arena-hard-auto (github lmarena/arena-hard-auto
@ 196f6b8, Apache-2.0): the system prompt per category (``utils/judge_utils.py``: the hard
prompts' asks the judge to write its own answer first, creative writing's does not), the user
prompt (``config/arena-hard-v2.0.yaml``: ``prompt_template``) and the verdict patterns
(``regex_patterns``). ``tests/unit/test_arena_hard_v2.py`` checks them against the copied
official files."""

from __future__ import annotations

HARD_PROMPT_SYSTEM = (
    'Please act as an impartial judge and evaluate the quality of the responses '
    'provided by two AI assistants to the user prompt displayed below. You will be '
    "given assistant A's answer and assistant B's answer. Your job is to evaluate "
    "which assistant's answer is better.\n"
    '\n'
    'Begin your evaluation by generating your own answer to the prompt. You must '
    'provide your answers before judging any answers.\n'
    '\n'
    "When evaluating the assistants' answers, compare both assistants' answers with "
    'your answer. You must identify and correct any mistakes or inaccurate '
    'information.\n'
    '\n'
    "Then consider if the assistant's answers are helpful, relevant, and concise. "
    'Helpful means the answer correctly responds to the prompt or follows the '
    'instructions. Note when user prompt has any ambiguity or more than one '
    'interpretation, it is more helpful and appropriate to ask for clarifications or '
    'more information from the user than providing an answer based on assumptions. '
    'Relevant means all parts of the response closely connect or are appropriate to '
    'what is being asked. Concise means the response is clear and not verbose or '
    'excessive.\n'
    '\n'
    "Then consider the creativity and novelty of the assistant's answers when "
    "needed. Finally, identify any missing important information in the assistants' "
    'answers that would be beneficial to include when responding to the user prompt.\n'
    '\n'
    'After providing your explanation, you must output only one of the following '
    'choices as your final verdict with a label:\n'
    '\n'
    '1. Assistant A is significantly better: [[A>>B]]\n'
    '2. Assistant A is slightly better: [[A>B]]\n'
    '3. Tie, relatively the same: [[A=B]]\n'
    '4. Assistant B is slightly better: [[B>A]]\n'
    '5. Assistant B is significantly better: [[B>>A]]\n'
    '\n'
    'Example output: "My final verdict is tie: [[A=B]]".'
)

CREATIVE_WRITING_SYSTEM = (
    'Please act as an impartial judge and evaluate the quality of the responses '
    'provided by two AI assistants to the user prompt displayed below. You will be '
    "given assistant A's answer and assistant B's answer. Your job is to evaluate "
    "which assistant's answer is better.\n"
    '\n'
    "When evaluating the assistants' answers, compare both assistants' answers. You "
    'must identify and correct any mistakes or inaccurate information.\n'
    '\n'
    "Then consider if the assistant's answers are helpful, relevant, and concise. "
    'Helpful means the answer correctly responds to the prompt or follows the '
    'instructions. Note when user prompt has any ambiguity or more than one '
    'interpretation, it is more helpful and appropriate to ask for clarifications or '
    'more information from the user than providing an answer based on assumptions. '
    'Relevant means all parts of the response closely connect or are appropriate to '
    'what is being asked. Concise means the response is clear and not verbose or '
    'excessive.\n'
    '\n'
    "Then consider the creativity and novelty of the assistant's answers when "
    "needed. Finally, identify any missing important information in the assistants' "
    'answers that would be beneficial to include when responding to the user prompt.\n'
    '\n'
    'After providing your explanation, you must output only one of the following '
    'choices as your final verdict with a label:\n'
    '\n'
    '1. Assistant A is significantly better: [[A>>B]]\n'
    '2. Assistant A is slightly better: [[A>B]]\n'
    '3. Tie, relatively the same: [[A=B]]\n'
    '4. Assistant B is slightly better: [[B>A]]\n'
    '5. Assistant B is significantly better: [[B>>A]]\n'
    '\n'
    'Example output: "My final verdict is tie: [[A=B]]".'
)

PROMPT_TEMPLATE = (
    '<|User Prompt|>\n'
    '{QUESTION}\n'
    '\n'
    "<|The Start of Assistant A's Answer|>\n"
    '{ANSWER_A}\n'
    "<|The End of Assistant A's Answer|>\n"
    '\n'
    "<|The Start of Assistant B's Answer|>\n"
    '{ANSWER_B}\n'
    "<|The End of Assistant B's Answer|>"
)

#: the system prompt per category (and per hard-prompt subcategory, as the tool keys them)
SYSTEM_PROMPTS = {"hard_prompt": HARD_PROMPT_SYSTEM, "coding": HARD_PROMPT_SYSTEM,
                  "math": HARD_PROMPT_SYSTEM, "creative_writing": CREATIVE_WRITING_SYSTEM}
#: categories whose prompt asks the judge to answer the question itself before judging
ANSWERS_FIRST = frozenset({"hard_prompt", "coding", "math"})
#: the tool's verdict patterns, tried in order on the upper-cased judgment (``get_score``)
REGEX_PATTERNS = ('\\[\\[([AB<>=]+)\\]\\]', '\\[([AB<>=]+)\\]')
#: the labels show_result.py scores (``label_to_score``); another match makes it fail
SCORED_LABELS = ("A>B", "A>>B", "A=B", "A<<B", "A<B", "B>A", "B>>A", "B=A", "B<<A", "B<A")


def user_prompt(question: str, answer_a: str, answer_b: str) -> str:
    """The judge's user message, as ``prompt_template.format(QUESTION=…, ANSWER_A=…, …)``."""
    return PROMPT_TEMPLATE.format(QUESTION=question, ANSWER_A=answer_a, ANSWER_B=answer_b)

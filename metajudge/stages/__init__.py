"""The loop's stages and the one runner they share.

- :mod:`~metajudge.stages.runner`: the stage runner (chunks, resume, retries, manifest)
- :mod:`~metajudge.stages.generate`: the actor (K responses per prompt)
- :mod:`~metajudge.stages.judge`: N rubric judgments per response
- :mod:`~metajudge.stages.meta_judge`: judgments compared in both orders
- :mod:`~metajudge.stages.adaptive`: adaptive judging's settings, audit sample and read-back
- :mod:`~metajudge.stages.audit`: the audit of adaptive judging against the full procedure
- :mod:`~metajudge.stages.pairs`: actor and judge preference pairs, the TRL dataset
- :mod:`~metajudge.stages.train`: DPO, in-process or launched
- :mod:`~metajudge.stages.summary`: the per-iteration table
"""

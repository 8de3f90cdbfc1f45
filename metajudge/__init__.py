"""metajudge: Meta-Rewarding self-improvement (actor, judge, meta-judge) and its evaluation.

Start with ``metajudge --help``; the library mirrors the CLI: ``metajudge.config`` (run
configs), ``metajudge.store`` (run directories and evaluation folders), ``metajudge.backends``
(generation backends and served engines), ``metajudge.stages`` (generate, judge, meta-judge,
pairs, train and the stage runner), ``metajudge.loop`` (the iteration), ``metajudge.evaluation``
(harnesses), ``metajudge.analysis`` (pure analyses), ``metajudge.report`` (tables and figures).
"""

__version__ = "0.1.0"

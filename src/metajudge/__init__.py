"""metajudge: Meta-Rewarding self-improvement (actor, judge, meta-judge) and its evaluation.

Start with ``metajudge --help``; the library mirrors the CLI:
``metajudge.config`` (run configs), ``metajudge.store`` (run directories),
``metajudge.backends`` (generation backends), ``metajudge.generate`` (the actor stage).
"""

__version__ = "0.1.0"

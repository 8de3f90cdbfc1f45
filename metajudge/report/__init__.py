"""A run's tables and figures: iteration curves beside the paper's, judge behaviour per iteration.

:mod:`~metajudge.report.tables` gathers frames from a run directory and harness outputs,
:mod:`~metajudge.report.plots` turns frames into matplotlib figures, and
:mod:`~metajudge.report.build` writes both (``metajudge report``). Notebooks call the same
functions.
"""

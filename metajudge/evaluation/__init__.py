"""Evaluation harnesses (SPEC §7): AlpacaEval 2, Arena-Hard v0.1, MT-Bench and judge–human
agreement.

Each harness runs with any backend as the model and any backend as the judge, resumes from its
output directory, and writes its records in the layout of the official tool it stands in for.
``metajudge eval …`` is the command line; the functions here are the library.
"""

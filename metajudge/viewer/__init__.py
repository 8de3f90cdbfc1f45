"""The run explorer: a read-only local server and a static bundle that follow one prompt
through the loop (responses → judgments → meta-judge battles → pairs → DPO rows), per
iteration, with the run's overview and the harness results.

    metajudge view runs/tiny                      # http://127.0.0.1:8765/
    metajudge view runs/tiny --bundle share/tiny  # any static host, e.g.:
    python -m http.server --bind 127.0.0.1 -d share/tiny
    metajudge view --harness results/harness

Parts, each importing only those before it: :mod:`~metajudge.viewer.paths` (what of a run may
be read), :mod:`~metajudge.viewer.schema` (the index's tables, typed rows),
:mod:`~metajudge.viewer.stats` (what the index precomputes), :mod:`~metajudge.viewer.index` (the
SQLite index, built once and extended), :mod:`~metajudge.viewer.harness` (harness folders),
:mod:`~metajudge.viewer.diff` and :mod:`~metajudge.viewer.compare` (the side-by-side views),
:mod:`~metajudge.viewer.queries` (the API's answers), :mod:`~metajudge.viewer.server` and
:mod:`~metajudge.viewer.bundle`; the app is ``static/`` (plain JavaScript, no build step).
"""

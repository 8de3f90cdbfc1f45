"""The run explorer: a read-only local server and a static bundle that follow one prompt
through the loop (responses → judgments → meta-judge battles → pairs → DPO rows), per
iteration, with the run's overview and the harness results.

    metajudge view runs/tiny                      # http://127.0.0.1:8765/
    metajudge view runs/tiny --bundle share/tiny  # any static host: python -m http.server --bind 127.0.0.1 -d share/tiny
    metajudge view --harness results/harness

Parts: :mod:`~metajudge.viewer.index` (the SQLite index, built once and extended),
:mod:`~metajudge.viewer.stats` (what it precomputes), :mod:`~metajudge.viewer.queries` (the
API's answers), :mod:`~metajudge.viewer.harness` (harness folders), :mod:`~metajudge.viewer.server`
and :mod:`~metajudge.viewer.bundle`; the app is ``static/`` (plain JavaScript, no build step).
"""

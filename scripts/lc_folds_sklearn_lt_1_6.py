"""Record the fold order scikit-learn < 1.6 gives alpaca-eval's LC cross-validation.

alpaca-eval 0.6.6 fits the length-controlled GLM with ``LogisticRegressionCV(cv=GroupKFold(5))``,
one group of two rows per training row (the soft label's two copies), n = 1,610 gamed-baseline
rows + the model's rows with a preference. scikit-learn < 1.6's ``GroupKFold`` orders the groups
with ``np.argsort(n_samples_per_group)[::-1]``, numpy's default (unstable) sort, and deals them
round-robin to the folds; with every group the same size the order is whatever numpy's sort makes
of n equal keys. numpy 1.26's AVX-512 sort makes a scrambled order (numpy 2 keeps the identity,
which is what scikit-learn >= 1.6 gives anyway). This script records that order for every n the
LC fit can meet (1,611 .. 2,415), as delta-encoded int16:

    python3 -m venv /tmp/skl15 && /tmp/skl15/bin/pip install scikit-learn==1.5.2 numpy==1.26.4
    /tmp/skl15/bin/python scripts/lc_folds_sklearn_lt_1_6.py   # on an AVX-512 x86-64 CPU

Output: ``metajudge/data/alpaca_eval_folds_sklearn_lt_1_6.npy.gz``.
"""

import gzip
import io
from pathlib import Path

import numpy as np

FIRST, LAST = 1611, 2415

if __name__ == "__main__":
    parts = []
    for n in range(FIRST, LAST + 1):
        order = np.argsort(np.full(n, 2, dtype=np.int64))
        parts.append(np.diff(np.concatenate([[-1], order])).astype(np.int16))
    buffer = io.BytesIO()
    np.save(buffer, np.concatenate(parts))
    out = Path(__file__).resolve().parents[1] / "metajudge/data/" \
        "alpaca_eval_folds_sklearn_lt_1_6.npy.gz"
    out.write_bytes(gzip.compress(buffer.getvalue(), 9, mtime=0))
    print(f"{out}: numpy {np.__version__}, n = {FIRST}..{LAST}")

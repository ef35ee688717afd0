"""The comparison report of `dupru-compare`: one module per question.

- runs: which runs (experiment folders or checkpoints), their weights, network and pruning settings
- datasets: which images (GT / LR pairs) every run is evaluated on
- evaluate: networks, metrics, timing, model size, per-round tickets
- figures: plots and crops
- tables / writers: the report's tables, and the CSV / JSON / markdown / HTML files
- results: the results container; build: `compare()`, which runs all of the above in order
"""


class CompareError(ValueError):
    """An input the comparison cannot use; the message names the file or folder and how to fix it."""

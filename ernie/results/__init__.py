"""Results: read collected run directories, derive their figures, and index them in `results/ernie.db`."""

from ernie.results.figures import RunSummary, summarize
from ernie.results.index import ResultsIndex
from ernie.results.mlperf import Comparison, MlperfRow, compare, mlperf_rows
from ernie.results.rundir import RunFiles, read_run

__all__ = [
    "Comparison", "MlperfRow", "ResultsIndex", "RunFiles", "RunSummary",
    "compare", "mlperf_rows", "read_run", "summarize",
]

"""Pattern 2: score a SQL query (or a file) into a table of the shared database, resumable, on Dask if asked.

    modelyard score house-prices --from "SELECT * FROM houses" --to house_prices_scored --key id
"""

from modelyard.batch.chunk import Rejected, ScoredChunk, score_chunk
from modelyard.batch.runner import BatchResult, score
from modelyard.errors import BatchError

__all__ = ["BatchError", "BatchResult", "Rejected", "ScoredChunk", "score", "score_chunk"]

"""ADM-protocol evaluation: FID, sFID, Inception Score, precision and recall."""

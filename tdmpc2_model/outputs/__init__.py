"""What a run writes while it runs: metric loggers, the metrics CSV and the run record."""

"""Studies: the sweep over batch sizes, precisions and backends, the SLO (max-QPS) search and the curves, each point a run of runs/; writes study.json."""

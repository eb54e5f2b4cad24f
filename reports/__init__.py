"""Reports and planning, rendered only from saved results (study.json, measurements.json): comparison reports, capacity plans, plots, documents and the run's result screen."""

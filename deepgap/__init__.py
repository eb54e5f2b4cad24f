"""The `deepgap` console command: the top of the project, above every package it dispatches to."""

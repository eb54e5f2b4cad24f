"""Serving deepgap's networks behind a KServe v2 server: an MLServer runtime and launcher
(the test fixture's engine and a user tool) and a Triton model repository writer."""

"""System under test: LoadGen SUT/QSL adapters, dynamic batcher, backends, data."""

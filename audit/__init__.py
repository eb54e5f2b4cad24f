"""MLPerf compliance tests (TEST01, TEST04), submission runs and the results checker."""

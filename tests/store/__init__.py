"""Store tests: the reusable conformance suite and each implementation's specifics."""

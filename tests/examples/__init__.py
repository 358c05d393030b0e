"""Behavioural tests for the runnable examples in examples/."""

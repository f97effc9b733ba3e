"""Models the tests use to play an application (the seeds' examples)."""

"""Evaluators: take a model and a dataset, yield per-sample records. They know nothing of suites or files."""

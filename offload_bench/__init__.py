"""Reliability harness for offload: real web, worker and backend processes under failure.

Run ``python -m offload_bench.chaos`` (or ``make chaos``); see ``docs/RELIABILITY.md``.
"""

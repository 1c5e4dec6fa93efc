"""Benchmarks of the whole pipeline (``declic bench``), beside a naive Celery baseline.

:mod:`bench.pipeline` runs both systems on the same services and the same SES stand-in
(:mod:`declic.standin`), :mod:`bench.workload` builds the seeded event mix, :mod:`bench.measure`
reads CPU and memory of process trees, :mod:`bench.naive` is the baseline, and
:mod:`bench.cli` adds the ``declic bench`` command.
"""

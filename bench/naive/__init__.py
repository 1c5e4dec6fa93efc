"""The naive Celery baseline of ``declic bench`` (see :mod:`bench.naive.app`)."""

"""Prometheus metrics: what each process counts (``record``), what is read from Redis at scrape time
(``gauges``), and the ``/metrics`` endpoint any function mounts (``endpoint``). Imports ``wsm.core`` and
``wsm.store`` only, so every area above may count.

Counting: ``from wsm.metrics import record`` then e.g. ``record.llm_tokens(prompt=812, completion=64)``.
Serving: ``from wsm.metrics.endpoint import answer`` (ASGI functions, Lambda) or ``metrics_response`` (Flask).
"""

from wsm.metrics import multiproc_dir

multiproc_dir.ensure()  # before any module here imports prometheus_client, which fixes its mode on import

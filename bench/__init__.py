"""Remora's benchmarks: each module is a script (``.venv/bin/python bench/<name>.py --help``).

They stand the product up with the :mod:`harness` package, as the tests do, and share what
measures: :mod:`bench.procfs` (CPU and memory from ``/proc``), :mod:`bench.percentiles`, and
the xDS benches' synthetic mesh (:mod:`bench.xds_common`). ``docs/benchmarks.md`` has the
figures and how they were taken.
"""

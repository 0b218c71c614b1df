"""qsupervisor's benchmark suite; `python bench/run.py --help` runs it.

Everything here runs against the local RabbitMQ and starts real `qsupervisord` daemons
and plain pika consumer processes. Each part is a module with one `run(settings)` that
returns a JSON-serialisable dict; `report.py` turns those dicts into docs/benchmarks.md.
"""

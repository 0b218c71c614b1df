"""qsupervisor: a process supervisor for RabbitMQ queue workers."""

from qsupervisor.job import Job, current_job

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = ["Job", "current_job", "__version__", "PROTOCOL_VERSION"]

"""Default locations, without importing anything: qsupervisorctl reads these on every call."""

DEFAULT_CONFIG_PATH = "/etc/qsupervisor/queues.yaml"
DEFAULT_SOCKET = "/run/qsupervisor/qsupervisord.sock"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"

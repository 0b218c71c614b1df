"""End-to-end tests: the real qsupervisord and qsupervisorctl against a real RabbitMQ."""

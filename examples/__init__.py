"""Example handlers used by conf/queues.yaml; they stand in for an application's jobs."""

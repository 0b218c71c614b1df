"""qsupervisor's side of RabbitMQ: the message format, delayed delivery without plugins,
the topology a program needs, and publishing with confirms.

The submodules are small and independent on purpose: `messages` and `delays` are pure
(no I/O) so producers, the worker and the tests share one definition of the contract;
`topology` and `publisher` are the only ones that talk to the broker.
"""

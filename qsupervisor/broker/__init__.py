"""qsupervisor's side of RabbitMQ: the message format, delayed delivery without plugins,
the topology a program needs, and publishing with confirms.

The submodules are small and independent on purpose: `messages` and `delays` are pure
(no I/O) so producers, the worker and the tests share one definition of the contract;
`topology` and `publisher` are the only ones that talk to the broker.
"""

from qsupervisor.broker import fieldtable

# Before any connection exists: pika's own table codec turns float headers into ints and
# cannot write them back (fieldtable's docstring). Every process that talks to the broker
# imports this package first (workers, leaders, qsupervisorctl, a producer's publish()).
fieldtable.install()

"""The local stack behind ``streamrec stack``: Kafka (KRaft) and Redis on loopback, by pid.

:mod:`streamrec.stack.local` starts and stops the services, :mod:`streamrec.stack.deps`
fetches the broker jars, :mod:`streamrec.stack.procs` probes and stops processes, and
:mod:`streamrec.stack.children` runs streamrec's own processes as children.
"""

__all__: list[str] = []

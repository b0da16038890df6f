"""The local stack behind ``streamrec stack``: Kafka (KRaft) and Redis on loopback, by pid.

:mod:`streamrec.stack.local` starts and stops the services, :mod:`streamrec.stack.deps`
fetches the broker jars, :mod:`streamrec.stack.procs` probes and stops processes, and
:mod:`streamrec.stack.children` runs streamrec's own processes as children.
:mod:`streamrec.stack.monitoring` runs Prometheus and Alertmanager with the deploy/ configs
(``stack up --with-monitoring``), from Debian's packages unpacked by
:mod:`streamrec.stack.tools`.
"""

__all__: list[str] = []

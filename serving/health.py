"""The standard gRPC health service, with ``List`` (grpc_health's asyncio servicer lacks it).

Without ``List`` every call raised ``NotImplementedError`` inside the server (a traceback per
call). :class:`HealthServicer` answers it with the status of every registered service.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer"]

#: grpc_health's asyncio servicer (its type stubs do not describe the ``aio`` module).
_HEALTH_AIO: Any = health.aio  # type: ignore[attr-defined]


class HealthServicer(_HEALTH_AIO.HealthServicer):  # type: ignore[misc]
    """Check, Watch (grpc_health) and List."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        statuses: dict[str, Any] = dict(self._server_status)
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )

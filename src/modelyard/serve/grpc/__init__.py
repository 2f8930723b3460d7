"""The Open Inference Protocol over gRPC: the ``.proto``, its generated messages, the server (``server.py``,
imported by the app only when ``grpc_port`` is set)."""

__all__: list[str] = []

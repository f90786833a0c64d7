"""Python client of the fleetbench gRPC API (``fleetbench.v1``).

``fleetbench_client.v1`` holds the generated protobuf messages (``fleetbench_pb2``) and
the typed gRPC stubs and servicer base (``fleetbench_pb2_grpc``) of
``protos/fleetbench/v1/fleetbench.proto``, the contract shared by the server, this client
and every other client. This distribution depends on ``grpcio`` and ``protobuf`` only.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

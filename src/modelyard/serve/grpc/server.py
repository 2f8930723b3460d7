"""The Open Inference Protocol over gRPC (``GRPCInferenceService``), in the same process and event loop as
the REST app: started and stopped by the app's lifespan when ``grpc_port`` is set.

Every ``ModelInfer`` goes through ``InferenceService.infer``, the one path REST takes too: the same routing
(canary, shadow), prediction log, metrics and micro-batching. Inputs are read from ``raw_input_contents``
(what tritonclient sends) or the typed ``contents``; outputs always go back in ``raw_output_contents``.
Errors are gRPC statuses (``INVALID_ARGUMENT`` for a caller's mistake, ``NOT_FOUND``, ``UNAVAILABLE``...)
with the protocol's one-string message naming the field and row (``serve/http.py``). The standard health
service (``grpc.health.v1``) answers ``SERVING`` for ``""`` and ``inference.GRPCInferenceService`` while
the server is up and ``NOT_SERVING`` once it stops.

With ``--workers N`` every worker binds the same port with ``SO_REUSEPORT`` (grpc's default on Linux): the
kernel spreads new connections over the workers, and one HTTP/2 connection stays on one worker, so a
client spreads load by opening several channels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.datastructures import Headers

from modelyard._version import __version__
from modelyard.errors import ModelyardError, SchemaError, ServiceUnavailableError
from modelyard.registry import parse_ref
from modelyard.serve import repository_v2
from modelyard.serve.grpc import inference_pb2 as pb
from modelyard.serve.http import REQUEST_ID_HEADER, checked_request_id, grpc_code, protocol_message
from modelyard.serve.inference import Parsed
from modelyard.serve.state import ServerState
from modelyard.serve.tensors import (
    Tensor,
    assemble,
    check_count,
    check_datatype,
    check_shape,
    decode_raw,
    describe_model,
    encode_raw,
    output_tensors,
    requested_outputs,
    text,
)
from modelyard.serve.v2 import EXTENSIONS

log = logging.getLogger("modelyard.serve")
SERVICE = "inference.GRPCInferenceService"  # the protocol's name: the method paths clients call
PROTOCOL = "v2-grpc"
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def _input(request: pb.ModelInferRequest, i: int) -> Tensor:
    tensor = request.inputs[i]
    name = tensor.name
    if not name:
        raise SchemaError(f"inputs[{i}] needs a 'name'", field="inputs")
    shape = check_shape(name, list(tensor.shape))
    datatype = check_datatype(name, tensor.datatype)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise SchemaError(f"raw_input_contents has {len(request.raw_input_contents)} entries for "
                              f"{len(request.inputs)} inputs", field="raw_input_contents")
        return Tensor(name, shape, decode_raw(name, datatype, shape, request.raw_input_contents[i]))
    if datatype == "FP16":
        raise SchemaError(f"input '{name}': FP16 values travel in raw_input_contents", field=name)
    values: list[Any] = list(getattr(tensor.contents, CONTENTS[datatype]))
    if datatype == "BYTES":
        values = [text(name, v, row) for row, v in enumerate(values)]
    check_count(name, shape, values)
    return Tensor(name, shape, values)


def parse(request: pb.ModelInferRequest) -> Parsed:
    tensors = [_input(request, i) for i in range(len(request.inputs))]
    names = requested_outputs(o.name for o in request.outputs)
    return assemble(tensors, names, _parameters(request.parameters), request.id)


def _metadata_headers(context: grpc.aio.ServicerContext) -> Headers:
    return Headers({k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)})


class InferenceServicer:
    """The protocol's RPCs over the server's state (repository, inference service)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.state.repository.ready and not self.state.stopping)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="modelyard", version=__version__, extensions=EXTENSIONS)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            await self._model(request.name, request.version)
        except ModelyardError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.state.stopping)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        meta = describe_model(await self._model(request.name, request.version))
        tensors = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensors(**t) for t in meta["inputs"]], outputs=[tensors(**t) for t in meta["outputs"]])

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        headers = _metadata_headers(context)
        ref = _ref(request.model_name, request.model_version)

        async def parsed() -> Parsed:
            return parse(request)

        outcome = await self.state.service.infer(
            ref, lambda: checked_request_id(headers.get(REQUEST_ID_HEADER)), headers, parsed, PROTOCOL)
        model = outcome.routed.model
        response = pb.ModelInferResponse(model_name=model.name, model_version=str(model.version),
                                         id=request.id or outcome.request_id)
        response.parameters["request_id"].string_param = outcome.request_id
        for t in output_tensors(outcome):
            out = response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            for key, value in t.parameters.items():
                out.parameters[key].string_param = json.dumps(value, default=str)
            response.raw_output_contents.append(encode_raw(t.datatype, t.values))
        await context.send_initial_metadata(((REQUEST_ID_HEADER.lower(), outcome.request_id),))
        return response

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext) -> Any:
        entries = repository_v2.index(self.state.repository, request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: grpc.aio.ServicerContext) -> Any:
        await repository_v2.load(self.state.repository, request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: grpc.aio.ServicerContext) -> Any:
        repository_v2.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _model(self, name: str, version: str) -> Any:
        model_name, selector = parse_ref(_ref(name, version))
        return await self.state.repository.get(model_name, selector)


def _ref(name: str, version: str) -> str:
    return name if not version else f"{parse_ref(name)[0]}@{version}"


def _guarded(method: Handler) -> Handler:
    """One error mapping for every RPC: a ModelyardError becomes its gRPC status and protocol message."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except ModelyardError as exc:
            if exc.status_code >= 500:
                log.error("gRPC %s failed: %s", method.__name__, exc.message)
            await context.abort(grpc.StatusCode[grpc_code(exc)], protocol_message(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("gRPC %s failed unexpectedly", method.__name__, exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error ({type(exc).__name__}); the server log has the details")

    call.__name__ = method.__name__
    return call


def _handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    messages: dict[str, Any] = {"ServerLive": pb.ServerLiveRequest, "ServerReady": pb.ServerReadyRequest,
                "ModelReady": pb.ModelReadyRequest, "ServerMetadata": pb.ServerMetadataRequest,
                "ModelMetadata": pb.ModelMetadataRequest, "ModelInfer": pb.ModelInferRequest,
                "RepositoryIndex": pb.RepositoryIndexRequest, "RepositoryModelLoad": pb.RepositoryModelLoadRequest,
                "RepositoryModelUnload": pb.RepositoryModelUnloadRequest}
    return grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(_guarded(getattr(servicer, name)),
                                                  request_deserializer=message.FromString,
                                                  response_serializer=lambda m: m.SerializeToString())
        for name, message in messages.items()})


class GrpcServer:
    """``grpc.aio`` on the running event loop: ``start`` binds the port, ``stop`` drains the calls."""

    def __init__(self, state: ServerState, host: str, port: int) -> None:
        self.state = state
        self.address = f"{host}:{port}"
        limit = state.settings.max_body_bytes
        self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                                ("grpc.max_send_message_length", -1),
                                                ("grpc.so_reuseport", 1)])
        self._health = health.aio.HealthServicer()

    async def start(self) -> GrpcServer:
        self._server.add_generic_rpc_handlers((_handlers(InferenceServicer(self.state)),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if self._server.add_insecure_port(self.address) == 0:
            raise ServiceUnavailableError(f"gRPC cannot listen on {self.address}", field="grpc_port")
        await self._server.start()
        for service in ("", SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC (Open Inference Protocol) on %s", self.address)
        return self

    async def stop(self, grace: float = 30.0) -> None:
        """NOT_SERVING for health checks, no new calls; the calls in flight finish (at most ``grace`` s)."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

"""A bare KServe v2 gRPC server that answers every request at once: the client's ceiling.

    python -m serving.instant_grpc --model resnet50 --image-size 224 --port 8001

MLServer's `--instant` model (serving/mlserver_launch.py) still decodes every request into
numpy and encodes the answer through its own types: at 224 px that costs it more than a
client spends, so a run against it measures MLServer. This server checks each request's
shape and datatype against its metadata and answers zero logits as raw bytes without
reading the pixels, in grpc's asyncio server: what is left of a run against it is the
client (deepgap's SUT, tritonclient, gRPC) and the loopback. It implements the calls
deepgap makes (live, ready, server and model metadata, infer); Triton's model config and
the rest answer UNIMPLEMENTED, as they do on MLServer. Host 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Sequence

from plumbing.argtypes import DefaultsHelpFormatter, OneLineParser, int_at_least
from plumbing.errors import ConfigError, DeepgapError, exit_code_epilog
from sut.backends.base import MODELS
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME

SERVER_NAME = "deepgap-instant"
MESSAGE_LIMIT = 1 << 30  # a 224-px FP32 batch of 8 is 4.8 MB, over gRPC's 4 MiB default


class InstantModel:
    """What the served model declares, and the zero answer for each batch size."""

    def __init__(self, name: str, image_size: int, num_classes: int, datatype: str) -> None:
        self.name, self.image_size, self.num_classes, self.datatype = name, image_size, num_classes, datatype
        self._zeros: dict[int, bytes] = {}

    def input_shape(self) -> list[int]:
        return [-1, 3, self.image_size, self.image_size]

    def refusal(self, request: Any) -> str | None:
        """Why the request is not one this model takes, or None."""
        if request.model_name != self.name:
            return f"no model {request.model_name!r} (this server has {self.name!r})"
        if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
            return f"model {self.name} takes one input {INPUT_NAME!r}"
        tensor = request.inputs[0]
        shape = list(tensor.shape)
        if tensor.datatype != self.datatype or len(shape) != 4 or shape[1:] != self.input_shape()[1:]:
            return f"model {self.name} takes {self.datatype} {self.input_shape()}, got {tensor.datatype} {shape}"
        rows = shape[0]
        itemsize = 2 if self.datatype == "FP16" else 4
        if rows < 1 or not request.raw_input_contents or \
                len(request.raw_input_contents[0]) != rows * 3 * self.image_size ** 2 * itemsize:
            return f"model {self.name}: the input's raw contents do not hold {shape}"
        return None

    def zeros(self, rows: int) -> bytes:
        if rows not in self._zeros:
            self._zeros[rows] = bytes(rows * self.num_classes * 4)
        return self._zeros[rows]


def build_servicer(model: InstantModel) -> Any:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as rpc

    class InstantServicer(rpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=request.name == model.name)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version="1", extensions=[])

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            if request.name != model.name:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name!r}")
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=model.name, versions=["1"], platform="instant",
                inputs=[tensor(name=INPUT_NAME, datatype=model.datatype, shape=model.input_shape())],
                outputs=[tensor(name=OUTPUT_NAME, datatype="FP32", shape=[-1, model.num_classes])])

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            why = model.refusal(request)
            if why is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
            rows = int(request.inputs[0].shape[0])
            output = pb.ModelInferResponse.InferOutputTensor(name=OUTPUT_NAME, datatype="FP32",
                                                             shape=[rows, model.num_classes])
            return pb.ModelInferResponse(model_name=model.name, model_version="1", id=request.id,
                                         outputs=[output], raw_output_contents=[model.zeros(rows)])

    return InstantServicer(), rpc.add_GRPCInferenceServiceServicer_to_server


async def serve(model: InstantModel, port: int, announce: bool = True) -> None:
    import grpc

    servicer, add = build_servicer(model)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MESSAGE_LIMIT),
                                      ("grpc.max_send_message_length", MESSAGE_LIMIT),
                                      ("grpc.so_reuseport", 0)])
    add(servicer, server)
    address = f"127.0.0.1:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc raises here, or returns 0, depending on its version
        bound = 0
    if bound == 0:
        raise ConfigError(f"cannot listen on {address}: the port is taken (choose another --port)")
    await server.start()
    if announce:
        print(f"serving {model.name} (instant, {model.datatype} {model.input_shape()}): grpc {address}; "
              "Ctrl-C stops it", flush=True)
    await server.wait_for_termination()


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m serving.instant_grpc", formatter_class=DefaultsHelpFormatter,
                      description=__doc__.split("\n\n")[2].replace("\n", " "), epilog=exit_code_epilog())
    p.add_argument("--model", choices=MODELS, default="resnet50", help="the name it answers to")
    p.add_argument("--name", default=None, help="the name it is served under (default: --model)")
    p.add_argument("--image-size", type=int_at_least(8), default=224, help="input height and width")
    p.add_argument("--num-classes", type=int_at_least(1), default=1000, help="logits per row")
    p.add_argument("--input-datatype", choices=("FP32", "FP16"), default="FP32", help="the input tensor type")
    p.add_argument("--port", type=int_at_least(1, 65535), default=8001, help="gRPC port on 127.0.0.1")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        model = InstantModel(args.name or args.model, args.image_size, args.num_classes, args.input_datatype)
        # grpc's own log lines (a failed bind prints one) would add to the one-line errors.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        asyncio.run(serve(model, args.port))
    except DeepgapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

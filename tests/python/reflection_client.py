#!/usr/bin/env python3
"""A generic gRPC client for salve's API: it carries no salve code and no .proto file.

It finds everything through the server's reflection service, as grpcurl does: the list of
services, then the salve.v1 descriptors, from which it builds the message classes at run time
and calls GetStatus and SetMode. It prints one JSON object with what it saw, for the Rust test
(api/src/grpc/tests/interop.rs) to check.

Needs grpcio, grpcio-reflection and protobuf from PyPI (scripts/install-test-deps.sh).

Usage: reflection_client.py HOST:PORT [TOKEN]
"""

import json
import sys

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

try:
    from google.protobuf.message_factory import GetMessageClass
except ImportError:  # protobuf < 4.22
    from google.protobuf.message_factory import MessageFactory

    def GetMessageClass(descriptor):
        return MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


TIMEOUT_S = 30


def main():
    address = sys.argv[1]
    token = sys.argv[2] if len(sys.argv) > 2 else None
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)

    reflection = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(reflection.get_services())
    pool = DescriptorPool(reflection)
    service = pool.FindServiceByName("salve.v1.Salve")

    def call(method_name, request_json, metadata=()):
        method = service.FindMethodByName(method_name)
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        stub = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = json_format.Parse(request_json, request_class())
        response = stub(request, metadata=metadata, timeout=TIMEOUT_S)
        return json_format.MessageToDict(response)

    seen = {
        "services": services,
        "methods": [m.name for m in service.methods],
        "status": call("GetStatus", "{}"),
    }
    try:
        call("SetMode", '{"mode": "MODE_PAUSED"}')
        seen["set_mode_without_token"] = "OK"
    except grpc.RpcError as error:
        seen["set_mode_without_token"] = error.code().name
    if token:
        seen["set_mode_with_token"] = call(
            "SetMode",
            '{"rule": "crash_loop", "mode": "MODE_DRY_RUN"}',
            metadata=(("authorization", f"Bearer {token}"),),
        )
    print(json.dumps(seen))


if __name__ == "__main__":
    main()

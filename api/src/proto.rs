//! The `salve.v1` messages, the server trait and the client, generated from
//! `api/proto/salve/v1/salve.proto` at build time.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("salve.v1");

/// The full name of the service, as in gRPC paths and reflection.
pub const SERVICE_NAME: &str = "salve.v1.Salve";

/// The encoded `FileDescriptorSet` of `salve.proto`, with its comments: what the reflection
/// service serves, and what a client needs to print messages as protobuf JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("salve_descriptor");

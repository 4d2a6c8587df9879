//! Compiles `proto/salve/v1/salve.proto` with protox, a protobuf compiler in pure Rust, so a
//! machine with only the Rust toolchain builds salve: no system `protoc`. The descriptor set is
//! also written out, for the reflection service and for `salve ctl --json`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/salve/v1/salve.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Comments reach grpcurl's `describe` through reflection.
    compiler.include_source_info(true);
    compiler.open_file(proto)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("salve_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Type names (`prost::Name`) let a client find each message's descriptor, to print it as
    // protobuf JSON.
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}

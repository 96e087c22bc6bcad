//! Generates the master's gRPC client and server from `proto/master.proto`, with no system
//! `protoc`: `protox` parses the proto into a descriptor set in pure Rust and
//! `tonic-prost-build` turns it into Rust in `OUT_DIR`.

use std::error::Error;

const PROTO: &str = "proto/master.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile([PROTO], ["proto"]).map_err(|e| format!("{PROTO}: {e}"))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No generated `Client::connect(dst)`: it would clash with the `Connect` RPC, and
        // `GrpcMasterClient` builds its own `Endpoint` anyway.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

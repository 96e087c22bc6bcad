//! Generates the etcd v3 gRPC client stubs (KV, Lease, Watch) from the vendored
//! `proto/etcd/` files, with no system `protoc`: `protox` parses the protos into a
//! descriptor set in pure Rust and `tonic-prost-build` turns it into Rust in `OUT_DIR`
//! (the same pattern as `crates/mooncake-store/build.rs`).

use std::error::Error;

const PROTOS: &[&str] = &["proto/etcd/rpc.proto", "proto/etcd/mvccpb/kv.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/etcd/rpc.proto"], ["proto/etcd"])
        .map_err(|e| format!("proto/etcd/rpc.proto: {e}"))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // The store builds its own `Endpoint`s (timeouts, failover over the endpoint list).
        .build_transport(false)
        // Keys and values as `Bytes`: a put hands its value over without copying it.
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}

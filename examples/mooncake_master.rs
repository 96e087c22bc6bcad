//! `mooncake_master`: Mooncake's master with its command line (gflags spelling:
//! `--rpc_port=50051 --enable_http_metadata_server=1 --config_path=mooncake_config.yaml -v=1`).
//! The code lives in [`mooncake_cli::master`], shared with the Python wheel.

fn main() -> anyhow::Result<()> {
    mooncake_cli::master::run(std::env::args().collect())
}

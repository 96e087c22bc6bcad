//! `mooncake_store_service` (the C++ wheel's `mooncake_client`): contributes memory to the
//! pool so cached data outlives inference servers. Same flags as the C++ binary. The code
//! lives in [`mooncake_cli::store_service`], shared with the Python wheel.

fn main() -> anyhow::Result<()> {
    mooncake_cli::store_service::run(std::env::args().collect())
}

//! The server binaries' command lines and mains, as library functions so the Python
//! wheel's console scripts (`mooncake_master`, `mooncake_store_service`,
//! `mooncake_client`) run the same code as the `examples/` binaries.

pub mod master;
pub mod store_service;

//! `http_metadata_server`: Mooncake's HTTP metadata protocol as a standalone process, a
//! replacement for `python -m mooncake.http_metadata_server`.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use mooncake_metadata::{HttpMetadataServer, HttpMetadataServerConfig};

/// Serves `GET/PUT/DELETE /metadata?key=…` and `GET /health`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to bind; the server listens on exactly this address.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Port to bind; 0 picks a free port (printed on start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Largest accepted value in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_value_size: usize,
    #[command(flatten)]
    auth: mooncake_cli::flags::AuthArgs,
    /// Log verbosity: 0 info, 1 debug, 2 trace.
    #[arg(short = 'v', long = "verbose", default_value_t = 0)]
    verbosity: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mooncake_cli::init_tracing(args.verbosity);
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot bind the http metadata server to {addr}"))?;
    let local = listener.local_addr()?;
    mooncake_cli::announce(&format!(
        "http metadata server listening on http://{local}/metadata"
    ));
    let server = HttpMetadataServer::new(HttpMetadataServerConfig {
        max_value_size: args.max_value_size,
        auth_token: args.auth.token().map_err(anyhow::Error::msg)?,
    });
    server
        .run(listener, mooncake_cli::shutdown_signal())
        .await?;
    Ok(())
}

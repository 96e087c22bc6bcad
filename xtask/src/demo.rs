//! `cargo xtask demo`: builds the binaries in release, starts the HTTP metadata server on a
//! free loopback port, publishes a segment descriptor the way a transfer engine does, reads
//! it back, and stops the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use mooncake_metadata::keys::KeySpace;
use mooncake_metadata::{HttpStore, HttpStoreConfig, MetadataStore};

/// Kills the child process when dropped, so an error or panic never leaves it running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run() -> Result<()> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "--locked", "-p", "mooncake-examples"]);
    crate::run(build)?;
    let bin = crate::root().join("target/release/http_metadata_server");
    let mut child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(url) = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
    else {
        bail!("unexpected first line from the metadata server: {line:?}");
    };
    println!(
        "started http_metadata_server (pid {}) at {url}",
        guard.0.id()
    );
    let url = url.to_owned();
    tokio::runtime::Runtime::new()?.block_on(publish_and_read(&url))?;
    drop(guard);
    println!("stopped the metadata server; demo finished");
    Ok(())
}

async fn publish_and_read(url: &str) -> Result<()> {
    let store = HttpStore::new(url, HttpStoreConfig::default())?;
    let ks = KeySpace::default();
    let name = "127.0.0.1:17101";
    let rpc = r#"{"ip_or_host_name":"127.0.0.1","rpc_port":15001}"#;
    let desc = r#"{"buffers":[{"addr":139677308416000,"length":1048576,"name":"127.0.0.1:17101"}],"name":"127.0.0.1:17101","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":15489,"tcp_proto_version":2}"#;
    store
        .put(&ks.rpc_meta(name), Bytes::from_static(rpc.as_bytes()))
        .await?;
    println!("PUT {} -> {rpc}", ks.rpc_meta(name));
    store
        .put(&ks.segment(name), Bytes::from_static(desc.as_bytes()))
        .await?;
    println!(
        "PUT {} -> {} bytes of descriptor",
        ks.segment(name),
        desc.len()
    );
    let got = store
        .get(&ks.segment(name))
        .await?
        .context("descriptor vanished")?;
    println!(
        "GET {} <- {}",
        ks.segment(name),
        String::from_utf8_lossy(&got)
    );
    if got != desc.as_bytes() {
        bail!("the descriptor read back differs from the one written");
    }
    let missing = store.get(&ks.segment("no-such-segment")).await?;
    println!(
        "GET {} <- {missing:?} (missing keys are None)",
        ks.segment("no-such-segment")
    );
    store.delete(&ks.rpc_meta(name)).await?;
    store.delete(&ks.segment(name)).await?;
    println!("DELETE both keys, as an engine does on shutdown");
    Ok(())
}

//! `cargo xtask interop --etcd`: the same byte-exact transfers as the HTTP mode, both
//! directions, but with one real etcd (`/usr/bin/etcd`, Debian `etcd-server`) as the
//! metadata store of both engines.
//!
//! The C++ wheel is first asked to initialize against the etcd; a wheel built without
//! `USE_ETCD` aborts with "Unable to find metadata storage plugin etcd". Then the mode
//! says so and runs only the Rust part, which it runs in any case: two of our engines
//! through the same etcd, both directions, and a look with etcd's own API (its JSON
//! gateway) at the keys our engines wrote: exactly `mooncake/ram/<segment>` and
//! `mooncake/rpc_meta/<segment>`, with the fields of the C++ engine's JSON.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use mooncake_transfer_engine::{EngineConfig, Opcode, TransferEngine, TransferRequest};
use serde_json::Value;

use super::{pattern, Guard, REGION, SIZES, WHEEL};

/// The fields of the C++ engine's `mooncake/ram/<segment>` value for a TCP segment with
/// one buffer, as the 0.3.13.post1 wheel writes it (types: `n` number, `s` string).
const CPP_RAM_LAYOUT: &str = "{buffers:[{addr:n,length:n,name:s}],name:s,protocol:s,\
rdma_server_name:s,tcp_data_host:s,tcp_data_port:n,tcp_proto_version:n,timestamp:s}";
/// The fields of its `mooncake/rpc_meta/<segment>` value.
const CPP_RPC_META_LAYOUT: &str = "{ip_or_host_name:s,rpc_port:n}";

/// A single-member etcd on free loopback ports with a temporary data dir (removed when
/// dropped, after the process is killed).
pub(crate) struct Etcd {
    guard: Option<Guard>,
    /// `127.0.0.1:<client port>`.
    pub(crate) addr: String,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        drop(self.guard.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    pub(crate) fn start() -> Result<Self> {
        let binary = Path::new("/usr/bin/etcd");
        ensure!(
            binary.is_file(),
            "{} is missing: install the Debian package etcd-server",
            binary.display()
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "mooncake-interop-etcd-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("etcd.log");
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .args([
                "--name=mooncake-interop".to_owned(),
                format!("--data-dir={}", dir.join("data").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=mooncake-interop={peer_url}"),
                "--log-level=warn".to_owned(),
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start etcd")?;
        let mut etcd = Self {
            guard: Some(Guard(child)),
            addr: format!("127.0.0.1:{client}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while etcd.range("mooncake/").is_err() {
            let exited = etcd
                .guard
                .as_mut()
                .and_then(|g| g.0.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                bail!(
                    "etcd at {} did not come up ({exited:?}):\n{}",
                    etcd.addr,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// Every key under `prefix` with its value, read through etcd's JSON gateway
    /// (`POST /v3/kv/range`), not through our client.
    pub(crate) fn range(&self, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = format!(
            r#"{{"key":"{}","range_end":"{}"}}"#,
            b64_encode(prefix.as_bytes()),
            b64_encode(&end)
        );
        let mut conn = TcpStream::connect(&self.addr)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            conn,
            "POST /v3/kv/range HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        let (head, json) = response
            .split_once("\r\n\r\n")
            .context("no HTTP header end from etcd")?;
        ensure!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "etcd range: {head}"
        );
        let json: Value = serde_json::from_str(json).context("etcd range: not JSON")?;
        let mut out = BTreeMap::new();
        for kv in json["kvs"].as_array().into_iter().flatten() {
            let key = b64_decode(kv["key"].as_str().unwrap_or_default())?;
            let value = b64_decode(kv["value"].as_str().unwrap_or_default())?;
            out.insert(String::from_utf8(key)?, value);
        }
        Ok(out)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64
            .iter()
            .position(|&b| b == c)
            .with_context(|| format!("not base64: {text:?}"))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The field names and kinds of a JSON value, keys sorted, e.g. `{a:n,b:[{c:s}]}`.
fn layout(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", layout(&m[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!("[{}]", a.first().map(layout).unwrap_or_default()),
        Value::String(_) => "s".into(),
        Value::Number(_) => "n".into(),
        Value::Bool(_) => "b".into(),
        Value::Null => "null".into(),
    }
}

/// Checks that the keys under `mooncake/` are exactly the `ram` and `rpc_meta` keys of
/// `segments`, each with the C++ layout; returns the keys.
fn check_keys(etcd: &Etcd, segments: &[&str]) -> Result<Vec<String>> {
    let kvs = etcd.range("mooncake/")?;
    let mut want: Vec<String> = segments
        .iter()
        .flat_map(|s| {
            [
                format!("mooncake/ram/{s}"),
                format!("mooncake/rpc_meta/{s}"),
            ]
        })
        .collect();
    want.sort();
    let got: Vec<String> = kvs.keys().cloned().collect();
    ensure!(got == want, "keys in etcd: {got:?}, expected {want:?}");
    for (key, value) in &kvs {
        let json: Value = serde_json::from_slice(value)
            .with_context(|| format!("{key}: not JSON: {}", String::from_utf8_lossy(value)))?;
        let expect = if key.starts_with("mooncake/ram/") {
            CPP_RAM_LAYOUT
        } else {
            CPP_RPC_META_LAYOUT
        };
        ensure!(
            layout(&json) == expect,
            "{key}: layout {} differs from the C++ engine's {expect}",
            layout(&json)
        );
    }
    Ok(got)
}

/// Asks the C++ wheel to initialize with `meta` as its metadata server. `Ok(None)` when
/// it does; `Ok(Some(error))` when it has no etcd plugin (a wheel built without
/// `USE_ETCD`); an error for any other failure.
fn cpp_accepts(venv: &Path, meta: &str) -> Result<Option<String>> {
    let script = "import sys\nfrom mooncake.engine import TransferEngine\n\
                  rc = TransferEngine().initialize('127.0.0.1:17394', sys.argv[1], 'tcp', '')\n\
                  print('RC', rc, flush=True)\n";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script, meta])
        .env("MC_TCP_BIND_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.lines().any(|l| l.trim() == "RC 0") {
        return Ok(None);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only a wheel built without etcd is a skip; any other failure (a refused connection,
    // an engine that cannot use our etcd) is a failed interop run, never a "pass".
    if let Some(line) = stderr
        .lines()
        .rev()
        .find(|l| l.contains("Unable to find metadata storage plugin"))
    {
        return Ok(Some(format!(
            "{} (exit status {})",
            line.trim(),
            out.status
        )));
    }
    let why = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(['E', 'F']))
        .map_or_else(|| stdout.trim(), str::trim);
    bail!(
        "the C++ wheel {WHEEL} failed to initialize with {meta}: {why} (exit status {})",
        out.status
    )
}

pub(crate) fn run() -> Result<()> {
    let venv = super::prepare_venv()?;
    let etcd = Etcd::start()?;
    let meta = format!("etcd://{}", etcd.addr);
    println!("interop --etcd: etcd {} at {meta}", etcd_version());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let refusal = cpp_accepts(&venv, &meta)?;
    // The probe's keys stay behind (it exits without unregistering); start clean.
    rt.block_on(async {
        let store = mooncake_metadata::connect(&meta)?;
        for key in etcd.range("mooncake/")?.keys() {
            store.delete(key).await?;
        }
        anyhow::Ok(())
    })?;
    match &refusal {
        None => {
            println!("interop --etcd: the C++ wheel {WHEEL} accepts {meta} as its metadata server");
            rt.block_on(super::cpp_initiator_rust_target(&venv, &meta))?;
            rt.block_on(super::rust_initiator_cpp_target(&venv, &meta))?;
            println!(
                "interop --etcd: C++ <-> Rust both directions passed through etcd, byte-exact, sizes 1 B .. 64 MiB"
            );
            rt.block_on(cpp_keys_beside_ours(&venv, &etcd, &meta))?;
        }
        Some(why) => println!(
            "interop --etcd: NOTICE: the C++ wheel {WHEEL} was built without etcd metadata \
             support: {why}\ninterop --etcd: NO C++ interop through etcd took place; \
             running the Rust-only part"
        ),
    }
    rt.block_on(rust_only(&etcd, &meta))?;
    match refusal {
        None => println!("interop --etcd: passed (C++ and Rust through one etcd)"),
        Some(_) => println!(
            "interop --etcd: passed the Rust-only part; C++ interop through etcd was NOT tested (see the notice above)"
        ),
    }
    Ok(())
}

fn etcd_version() -> String {
    Command::new("/usr/bin/etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_owned())
        })
        .unwrap_or_default()
}

/// A C++ target and a Rust engine live at once: etcd holds exactly their four keys, the
/// C++ ones and ours with the same layout.
async fn cpp_keys_beside_ours(venv: &Path, etcd: &Etcd, meta: &str) -> Result<()> {
    let cpp = "127.0.0.1:17386";
    let args = [meta.to_owned(), cpp.to_owned(), "4096".into(), "3".into()];
    let (mut child, mut out) =
        super::python(venv, include_str!("cpp_target.py"), &args).context("C++ target")?;
    let mut line = String::new();
    out.read_line(&mut line)?;
    ensure!(
        line.starts_with("READY "),
        "the C++ target did not start: {line:?}"
    );
    let rust = TransferEngine::start_uri(EngineConfig::new("127.0.0.1:17387"), meta).await?;
    let _buf = rust.allocate_buffer(4096, "cpu:0").await?;
    let keys = check_keys(etcd, &[cpp, rust.segment_name()])?;
    println!("interop --etcd: keys in etcd with a C++ and a Rust engine registered, one layout: {keys:?}");
    let stdin = child.0.stdin.as_mut().context("no stdin")?;
    writeln!(stdin, "VERIFY 4 0")?;
    line.clear();
    out.read_line(&mut line)?;
    ensure!(
        line.starts_with("VERIFIED"),
        "the C++ target says: {line:?}"
    );
    drop(child);
    rust.shutdown().await?;
    // The killed C++ target leaves its keys; clear them for the next step.
    let store = mooncake_metadata::connect(meta)?;
    for key in etcd.range("mooncake/")?.keys() {
        store.delete(key).await?;
    }
    Ok(())
}

/// Two of our engines through the etcd, each the initiator once, with the sizes and byte
/// checks of the C++ runs; then the keys they wrote, read with etcd's own API.
async fn rust_only(etcd: &Etcd, meta: &str) -> Result<()> {
    let a = TransferEngine::start_uri(EngineConfig::new("127.0.0.1:17384"), meta).await?;
    let b = TransferEngine::start_uri(EngineConfig::new("127.0.0.1:17385"), meta).await?;
    let buf_a = a.allocate_buffer(2 * REGION, "cpu:0").await?;
    let buf_b = b.allocate_buffer(2 * REGION, "cpu:0").await?;
    let keys = check_keys(etcd, &[a.segment_name(), b.segment_name()])?;
    println!("interop --etcd: keys our engines wrote, C++ layout: {keys:?}");
    for (ini, ini_buf, tgt, tgt_buf, seeds) in [
        (&b, &buf_b, &a, &buf_a, (5, 6)),
        (&a, &buf_a, &b, &buf_b, (7, 8)),
    ] {
        tgt_buf.write_at(0, &pattern(0, REGION, seeds.0));
        let seg = ini.open_segment(tgt.segment_name()).await?;
        let start = Instant::now();
        let mut off = 0;
        for &n in SIZES {
            let req = |opcode, target_offset| TransferRequest {
                opcode,
                source: ini_buf.addr(),
                target: seg,
                target_offset,
                length: n,
            };
            ini.transfer(&[req(Opcode::Read, tgt_buf.addr() + off)])
                .await?;
            ensure!(
                ini_buf.to_vec(0, n as usize) == pattern(off, n, seeds.0),
                "read of {n} bytes differs"
            );
            ini_buf.write_at(0, &pattern(off, n, seeds.1));
            ini.transfer(&[req(Opcode::Write, tgt_buf.addr() + REGION + off)])
                .await?;
            off += n;
        }
        ensure!(
            tgt_buf.to_vec(REGION, off as usize) == pattern(0, off, seeds.1),
            "bytes written by {} differ",
            ini.segment_name()
        );
        println!(
            "interop --etcd: Rust {} -> Rust {}: {off} bytes read and {off} written in {:?}, verified on both sides",
            ini.segment_name(),
            tgt.segment_name(),
            start.elapsed()
        );
    }
    a.shutdown().await?;
    b.shutdown().await?;
    let left = etcd.range("mooncake/")?;
    println!(
        "interop --etcd: keys left after both engines shut down: {:?}",
        left.keys().collect::<Vec<_>>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "m", "mo", "moo", "mooncake/", "mooncake0"] {
            let e = b64_encode(s.as_bytes());
            assert_eq!(b64_decode(&e).unwrap(), s.as_bytes(), "{e}");
        }
        assert_eq!(b64_encode(b"mooncake/"), "bW9vbmNha2Uv");
        assert_eq!(b64_encode(b"mooncake0"), "bW9vbmNha2Uw");
    }

    #[test]
    fn layout_of_the_cpp_json() {
        let ram = r#"{"buffers":[{"addr":94192058659072,"length":4096,"name":"127.0.0.1:17398"}],
            "name":"127.0.0.1:17398","protocol":"tcp","rdma_server_name":"",
            "tcp_data_host":"127.0.0.1","tcp_data_port":15556,"tcp_proto_version":2,
            "timestamp":"2026-12-06 19:14:43.166667"}"#;
        let v: Value = serde_json::from_str(ram).unwrap();
        assert_eq!(layout(&v), CPP_RAM_LAYOUT);
        let rpc: Value =
            serde_json::from_str(r#"{"ip_or_host_name":"127.0.0.1","rpc_port":16257}"#).unwrap();
        assert_eq!(layout(&rpc), CPP_RPC_META_LAYOUT);
    }
}

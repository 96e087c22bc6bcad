//! The processes of a chaos run: a metadata server, a master on fixed ports (so it can be
//! restarted in place), store services and client processes, each logging to files in the
//! run's directory; plus the in-process probe client that times recoveries.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mooncake_store::{Client, ClientConfig, ReplicateConfig};

use super::client::ClientArgs;
use crate::netns::{Host, Net};

/// Builds the binaries the run starts.
pub(super) fn build(release: bool) -> Result<()> {
    let mut cmd = crate::cargo();
    cmd.args(["build", "--locked", "-p", "mooncake-examples"]);
    if release {
        cmd.arg("--release");
    }
    crate::run(cmd)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Memory and descriptors of one process.
#[derive(Debug, Clone)]
pub(super) struct Usage {
    pub(super) name: String,
    pub(super) rss_kib: u64,
    pub(super) fds: u64,
}

fn usage_of(name: &str, pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Usage {
        name: name.to_owned(),
        rss_kib,
        fds,
    })
}

/// Keeps the largest figures seen per process name.
pub(super) fn merge_peak(peak: &mut Vec<Usage>, now: &[Usage]) {
    for u in now {
        match peak.iter_mut().find(|p| p.name == u.name) {
            Some(p) => {
                p.rss_kib = p.rss_kib.max(u.rss_kib);
                p.fds = p.fds.max(u.fds);
            }
            None => peak.push(u.clone()),
        }
    }
}

struct Running {
    name: String,
    child: Child,
}

impl Running {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(&mut self) {
        self.signal("CONT");
        self.signal("TERM");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

/// Every process of the run.
pub(super) struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub(super) master_addr: String,
    pub(super) metadata: String,
    metrics_port: u16,
    metadata_server: Running,
    master: Running,
    services: Vec<Option<Running>>,
    clients: Vec<Option<Running>>,
    starts: u64,
    segment: String,
    /// Hosts in network namespaces: 0 the master and metadata server, then the store
    /// services, then the clients. `None`: everything on loopback.
    pub(super) net: Option<Net>,
    services_n: usize,
}

impl Cluster {
    pub(super) fn start(
        dir: &Path,
        release: bool,
        services: usize,
        segment: &str,
        net: Option<Net>,
    ) -> Result<Self> {
        let bin = crate::root()
            .join("target")
            .join(if release { "release" } else { "debug" });
        let metadata_port = free_port()?;
        let (rpc, metrics) = (free_port()?, free_port()?);
        let master_ip = net
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |n| n.hosts[0].ip.clone());
        let mut me = Self {
            dir: dir.to_owned(),
            bin,
            master_addr: format!("{master_ip}:{rpc}"),
            metadata: format!("http://{master_ip}:{metadata_port}/metadata"),
            metrics_port: metrics,
            metadata_server: Running {
                name: String::new(),
                child: Command::new("true").spawn()?,
            },
            master: Running {
                name: String::new(),
                child: Command::new("true").spawn()?,
            },
            services: Vec::new(),
            clients: Vec::new(),
            starts: 0,
            segment: segment.to_owned(),
            net,
            services_n: services,
        };
        let exe = me.bin.join("http_metadata_server");
        let args = [
            format!("--host={master_ip}"),
            format!("--port={metadata_port}"),
        ];
        me.metadata_server = me.spawn("metadata", me.host(0), &exe, &args, Some("listening"))?;
        me.master = me.start_master()?;
        for i in 0..services {
            let s = me.start_service(i)?;
            me.services.push(Some(s));
        }
        Ok(me)
    }

    /// Host `i` of the run's network, if it has one.
    pub(super) fn host(&self, i: usize) -> Option<Host> {
        self.net.as_ref().map(|n| n.hosts[i].clone())
    }

    /// The host of store service `i`.
    pub(super) fn service_host(&self, i: usize) -> Option<Host> {
        self.host(1 + i)
    }

    /// The address store service `i` or client `i` (`client`) binds.
    pub(super) fn ip(&self, i: usize, client: bool) -> String {
        let h = if client {
            1 + self.services_n + i
        } else {
            1 + i
        };
        self.host(h).map_or("127.0.0.1".to_owned(), |h| h.ip)
    }

    fn spawn(
        &mut self,
        name: &str,
        host: Option<Host>,
        exe: &Path,
        args: &[String],
        ready: Option<&str>,
    ) -> Result<Running> {
        self.starts += 1;
        let out_path = self.dir.join(format!("{name}.{}.out", self.starts));
        let out = std::fs::File::create(&out_path)?;
        let err = std::fs::File::create(self.dir.join(format!("{name}.{}.err", self.starts)))?;
        let mut cmd = match &host {
            Some(h) => Net::command(h, exe),
            None => Command::new(exe),
        };
        let child = cmd
            .args(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut running = Running {
            name: name.to_owned(),
            child,
        };
        if let Some(needle) = ready {
            let t = Instant::now();
            loop {
                let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                if text.contains(needle) {
                    break;
                }
                if let Ok(Some(status)) = running.child.try_wait() {
                    bail!(
                        "{name} exited ({status}) before it was ready; see {}",
                        out_path.display()
                    );
                }
                if t.elapsed() > Duration::from_secs(60) {
                    running.kill();
                    bail!("{name} not ready after 60 s; see {}", out_path.display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(running)
    }

    fn start_master(&mut self) -> Result<Running> {
        let (rpc, metrics) = (
            self.master_addr
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
            self.metrics_port,
        );
        let ip = self.host(0).map_or("127.0.0.1".to_owned(), |h| h.ip);
        let args = [
            format!("--rpc_port={rpc}"),
            format!("--rpc_address={ip}"),
            format!("--metrics_host={ip}"),
            format!("--metrics_port={metrics}"),
            "--client_ttl=5".into(),
            "--default_kv_lease_ttl=200".into(),
        ];
        let exe = self.bin.join("mooncake_master");
        // A restarted master may find its ports in TIME_WAIT for a moment.
        let t = Instant::now();
        loop {
            match self.spawn(
                "mooncake_master",
                self.host(0),
                &exe,
                &args,
                Some("metrics on"),
            ) {
                Ok(m) => return Ok(m),
                Err(e) if t.elapsed() < Duration::from_secs(10) => {
                    eprintln!("master start failed ({e:#}); retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_service(&mut self, i: usize) -> Result<Running> {
        let args = [
            format!("--host={}", self.ip(i, false)),
            "--port=0".into(),
            format!("--global_segment_size={}", self.segment),
            format!("--master_server_address={}", self.master_addr),
            format!("--metadata_server={}", self.metadata),
            // Half of them in private memory: same-host clients then use TCP, as a client
            // on another machine would.
            // Between namespaces no segment is shared (they stand for separate machines).
            format!(
                "--shared_memory={}",
                self.net.is_none() && i.is_multiple_of(2)
            ),
            "--drain_timeout=5".into(),
        ];
        let exe = self.bin.join("mooncake_store_service");
        let host = self.service_host(i);
        self.spawn(&format!("service-{i}"), host, &exe, &args, Some("mounted"))
    }

    pub(super) fn start_client(&mut self, i: usize, args: &ClientArgs) -> Result<()> {
        let exe = std::env::current_exe()?;
        let json = serde_json::to_string(args)?;
        let host = self.host(1 + self.services_n + i);
        let c = self.spawn(
            &format!("client-{i}"),
            host,
            &exe,
            &["chaos-client".into(), json],
            None,
        )?;
        if self.clients.len() <= i {
            self.clients.resize_with(i + 1, || None);
        }
        self.clients[i] = Some(c);
        Ok(())
    }

    pub(super) fn kill_service(&mut self, i: usize) -> Result<()> {
        if let Some(mut s) = self.services[i].take() {
            s.kill();
        }
        Ok(())
    }

    pub(super) fn restart_service(&mut self, i: usize) -> Result<()> {
        let s = self.start_service(i)?;
        self.services[i] = Some(s);
        Ok(())
    }

    pub(super) fn signal_service(&mut self, i: usize, sig: &str) -> Result<()> {
        if let Some(s) = &self.services[i] {
            s.signal(sig);
        }
        Ok(())
    }

    pub(super) fn kill_client(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.clients[i].take() {
            c.kill();
        }
        Ok(())
    }

    pub(super) fn restart_master(&mut self) -> Result<()> {
        self.master.kill();
        self.master = self.start_master()?;
        Ok(())
    }

    /// Figures of every live process.
    pub(super) fn usage(&self) -> Vec<Usage> {
        let mut all = vec![&self.metadata_server, &self.master];
        all.extend(self.services.iter().flatten());
        all.extend(self.clients.iter().flatten());
        all.iter()
            .filter_map(|r| usage_of(&r.name, r.child.id()))
            .collect()
    }

    /// Waits for the clients to finish their run.
    pub(super) fn wait_clients(&mut self, bound: Duration) {
        let t = Instant::now();
        for c in self.clients.iter_mut().flatten() {
            while t.elapsed() < bound {
                if let Ok(Some(_)) = c.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            c.kill();
        }
    }

    pub(super) fn stop(&mut self) {
        for c in self.clients.iter_mut().flatten() {
            c.kill();
        }
        for s in self.services.iter_mut().flatten() {
            s.stop();
        }
        self.master.stop();
        self.metadata_server.stop();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.clients.iter_mut().flatten() {
            c.kill();
        }
        for s in self.services.iter_mut().flatten() {
            s.kill();
        }
        self.master.kill();
        self.metadata_server.kill();
    }
}

/// A client in this process that puts and reads back a probe value to tell when the
/// cluster serves again.
pub(super) struct Probe {
    runtime: tokio::runtime::Runtime,
    client: Client,
    metrics: String,
}

impl Probe {
    pub(super) fn new(cluster: &Cluster) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let local = cluster
            .net
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |n| n.gateway.clone());
        let config = ClientConfig {
            local_hostname: local,
            metadata_server: cluster.metadata.clone(),
            master_server_addr: cluster.master_addr.clone(),
            global_segment_size: 0,
            local_buffer_size: 4 << 20,
            ..ClientConfig::default()
        };
        let client = runtime.block_on(Client::setup(config))?;
        Ok(Self {
            runtime,
            client,
            metrics: format!(
                "{}:{}",
                cluster
                    .master_addr
                    .rsplit_once(':')
                    .map_or("127.0.0.1", |(h, _)| h),
                cluster.metrics_port
            ),
        })
    }

    /// How long until a fresh put and its get succeed, if within `bound`.
    pub(super) fn until_served(&self, bound: Duration) -> Option<Duration> {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < bound {
            n += 1;
            let key = format!("probe-{}-{n}", super::client::now_ms());
            let v = super::value::encode(&key, n, 4096);
            let ok = self.runtime.block_on(async {
                let put = tokio::time::timeout(
                    Duration::from_secs(5),
                    self.client.put(&key, &v, &ReplicateConfig::default()),
                )
                .await;
                if !matches!(put, Ok(Ok(()))) {
                    return false;
                }
                let got = tokio::time::timeout(Duration::from_secs(5), self.client.get(&key)).await;
                let ok = matches!(got, Ok(Ok(b)) if b == v);
                let _ = self.client.remove(&key, true).await;
                ok
            });
            if ok {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The number of keys the master holds (`/get_all_keys`).
    pub(super) fn key_count(&self) -> Option<u64> {
        let mut s = std::net::TcpStream::connect(self.metrics.as_str()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET /get_all_keys HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        Some(body.lines().filter(|l| !l.is_empty()).count() as u64)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.client.close());
    }
}

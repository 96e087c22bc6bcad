//! Hosts on one machine: network namespaces joined by a bridge, each with its own address,
//! so that what runs in them talks over a real (virtual) network as separate machines
//! would: no shared abstract sockets, no loopback shortcuts. Faults: a host's link taken
//! down (a partition), a rate limit on it (`tbf`), and `tc netem` delay/loss where the
//! kernel has it. Everything is removed when the [`Net`] is dropped.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// One namespace ("host") on the bridge.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) ns: String,
    /// The root-side end of its veth pair (where faults are applied).
    pub(crate) link: String,
    pub(crate) ip: String,
}

/// A bridge in the root namespace (address `<subnet>.1`) and hosts `<subnet>.2…`.
#[derive(Debug)]
pub(crate) struct Net {
    bridge: String,
    pub(crate) hosts: Vec<Host>,
    /// The root namespace's address on the bridge.
    pub(crate) gateway: String,
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

impl Net {
    /// Whether this machine lets us create namespaces and veth pairs (root, iproute2).
    pub(crate) fn available() -> bool {
        let probe = format!("mcprobe{}", std::process::id());
        let ok = sh(&["ip", "netns", "add", &probe]).is_ok();
        quiet(&["ip", "netns", "del", &probe]);
        ok
    }

    /// Creates `n` hosts named `<tag>0…`, on subnet `10.<octet>.0.0/24`.
    pub(crate) fn create(tag: &str, octet: u8, n: usize) -> Result<Self> {
        let bridge = format!("{tag}br");
        Self::cleanup(tag, n);
        let gateway = format!("10.{octet}.0.1");
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        let mut net = Self {
            bridge: bridge.clone(),
            hosts: Vec::new(),
            gateway: gateway.clone(),
        };
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &bridge,
        ])?;
        sh(&["ip", "link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("{tag}{i}");
            let link = format!("{tag}v{i}");
            let peer = format!("{tag}p{i}");
            let ip = format!("10.{octet}.0.{}", i + 2);
            sh(&["ip", "netns", "add", &ns])?;
            net.hosts.push(Host {
                ns: ns.clone(),
                link: link.clone(),
                ip: ip.clone(),
            });
            sh(&[
                "ip", "link", "add", &link, "type", "veth", "peer", "name", &peer,
            ])?;
            sh(&["ip", "link", "set", &peer, "netns", &ns])?;
            sh(&["ip", "link", "set", &link, "master", &bridge])?;
            sh(&["ip", "link", "set", &link, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &ns];
                all.extend_from_slice(args);
                sh(&all)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &peer])?;
            inside(&["ip", "link", "set", &peer, "up"])?;
        }
        Ok(net)
    }

    /// Removes what an earlier run with the same tag may have left.
    fn cleanup(tag: &str, n: usize) {
        for i in 0..n.max(32) {
            quiet(&["ip", "netns", "del", &format!("{tag}{i}")]);
            quiet(&["ip", "link", "del", &format!("{tag}v{i}")]);
        }
        quiet(&["ip", "link", "del", &format!("{tag}br")]);
    }

    /// `program args…` to run inside `host`.
    pub(crate) fn command(host: &Host, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]).arg(program);
        cmd
    }

    /// Takes `host`'s link down (`true`: nothing reaches it or leaves it) or up again.
    pub(crate) fn partition(host: &Host, cut: bool) -> Result<()> {
        sh(&[
            "ip",
            "link",
            "set",
            &host.link,
            if cut { "down" } else { "up" },
        ])
    }

    /// Limits what `host` receives to a slow link (`tbf`), or lifts the limit.
    pub(crate) fn throttle(host: &Host, slow: bool) -> Result<()> {
        if slow {
            sh(&[
                "tc", "qdisc", "replace", "dev", &host.link, "root", "tbf", "rate", "20mbit",
                "burst", "64kb", "latency", "50ms",
            ])
        } else {
            sh(&["tc", "qdisc", "del", "dev", &host.link, "root"])
        }
    }

    /// Adds `tc netem` delay and loss on `host`'s link; `Ok(false)` where the kernel has
    /// no netem (then nothing changed).
    pub(crate) fn netem(host: &Host, delay_ms: u32, loss_pct: u32) -> Result<bool> {
        Self::tc_netem(
            host,
            &[&format!("{delay_ms}ms"), "loss", &format!("{loss_pct}%")],
        )
    }

    /// `tc netem` delay of `us` microseconds on `host`'s link; `Ok(false)` without netem.
    pub(crate) fn netem_delay_us(host: &Host, us: u32) -> Result<bool> {
        Self::tc_netem(host, &[&format!("{us}us")])
    }

    /// `tc qdisc replace … netem delay <args>`: `Ok(false)` where the kernel has no netem.
    fn tc_netem(host: &Host, delay: &[&str]) -> Result<bool> {
        let out = Command::new("tc")
            .args([
                "qdisc", "replace", "dev", &host.link, "root", "netem", "delay",
            ])
            .args(delay)
            .output()?;
        if out.status.success() {
            return Ok(true);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("unknown") || err.contains("No such file") {
            return Ok(false);
        }
        bail!("tc netem on {}: {}", host.link, err.trim())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            quiet(&["ip", "netns", "del", &h.ns]);
            quiet(&["ip", "link", "del", &h.link]);
        }
        quiet(&["ip", "link", "del", &self.bridge]);
    }
}

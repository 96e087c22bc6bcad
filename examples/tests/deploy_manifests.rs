//! Every deployment file in `deploy/` against the real binaries: each Kubernetes
//! container and systemd unit that runs `mooncake_master` or `mooncake_store_service` has
//! its command line run through the binary's own parser (`--check_flags`), so a manifest
//! cannot drift from the flags; addresses of the master's Service must name a Service and
//! port that exist; a draining store service must get more time to stop than its
//! `--drain_timeout`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

/// One command line found in a deployment file.
#[derive(Debug)]
struct CommandLine {
    /// `file: kind/name container`.
    origin: String,
    program: String,
    args: Vec<String>,
    /// Seconds the process gets between SIGTERM and SIGKILL.
    stop_grace: Option<u64>,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
        })
        .collect()
}

/// Kubernetes' `$(VAR)` expansion in `command`/`args`, from the container's `env`
/// (a `fieldRef` such as `status.podIP` stands for a pod IP).
fn expand(arg: &str, env: &HashMap<String, String>) -> String {
    let mut out = arg.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// The command lines of every container of every workload in a manifest's documents.
fn kubernetes_command_lines(file: &str, text: &str) -> Result<Vec<CommandLine>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let doc = Value::deserialize(doc).map_err(|e| format!("{file}: not YAML: {e}"))?;
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let pod = match kind.as_str() {
            "Pod" => &doc["spec"],
            "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => &doc["spec"]["template"]["spec"],
            _ => continue,
        };
        let grace = pod["terminationGracePeriodSeconds"].as_u64().or(Some(30));
        for c in pod["containers"].as_sequence().into_iter().flatten() {
            let env: HashMap<String, String> = c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|e| {
                    let value = match e["value"].as_str() {
                        Some(v) => v.to_owned(),
                        None if e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" => {
                            "10.1.2.3".to_owned()
                        }
                        None => "placeholder".to_owned(),
                    };
                    (e["name"].as_str().unwrap_or_default().to_owned(), value)
                })
                .collect();
            let mut argv = strings(&c["command"]);
            argv.extend(strings(&c["args"]));
            let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
            let Some((program, args)) = argv.split_first() else {
                return Err(format!(
                    "{file}: {kind}/{name}: a container without command"
                ));
            };
            out.push(CommandLine {
                origin: format!(
                    "{file}: {kind}/{name} container {}",
                    c["name"].as_str().unwrap_or("?")
                ),
                program: program.clone(),
                args: args.to_vec(),
                stop_grace: grace,
            });
        }
    }
    Ok(out)
}

/// A systemd unit's `ExecStart` (split as systemd does for plain words and double
/// quotes) and `TimeoutStopSec`.
fn systemd_command_line(file: &str, text: &str) -> Result<CommandLine, String> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let exec = value("ExecStart").ok_or_else(|| format!("{file}: no ExecStart"))?;
    let mut words = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for ch in exec.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    let Some((program, args)) = words.split_first() else {
        return Err(format!("{file}: empty ExecStart"));
    };
    Ok(CommandLine {
        origin: format!("{file}: ExecStart"),
        program: program.clone(),
        args: args.to_vec(),
        stop_grace: value("TimeoutStopSec")
            .map(|v| v.parse().unwrap_or(90))
            .or(Some(90)),
    })
}

/// Our binary for a manifest's program (by file name), if it is one of ours.
fn our_binary(program: &str) -> Option<&'static str> {
    match Path::new(program).file_name()?.to_str()? {
        "mooncake_master" => Some(env!("CARGO_BIN_EXE_mooncake_master")),
        "mooncake_store_service" => Some(env!("CARGO_BIN_EXE_mooncake_store_service")),
        _ => None,
    }
}

/// Runs a command line through its binary's parser; every problem found, as sentences.
fn check(line: &CommandLine) -> Vec<String> {
    let Some(bin) = our_binary(&line.program) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let out = Command::new(bin)
        .args(&line.args)
        .arg("--check_flags")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    if !out.status.success() {
        problems.push(format!(
            "{}: `{} {}` is refused by the binary:\n{}",
            line.origin,
            line.program,
            line.args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let flag = |name: &str| {
        line.args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
    };
    let draining =
        line.program.ends_with("mooncake_store_service") && flag("segment_path").is_none();
    if draining {
        let drain: u64 = flag("drain_timeout").map_or(30, |v| v.parse().unwrap_or(0));
        let grace = line.stop_grace.unwrap_or(0);
        if grace < drain + 10 {
            problems.push(format!(
                "{}: the process gets {grace} s to stop but drains for up to --drain_timeout={drain} s: give it at least {} s",
                line.origin,
                drain + 10
            ));
        }
    }
    problems
}

/// Every `<service>.<namespace>.svc.cluster.local:<port>` in `text` that names no
/// Service port of `services`.
fn dangling_addresses(file: &str, text: &str, services: &HashMap<String, Vec<u64>>) -> Vec<String> {
    let suffix = ".svc.cluster.local";
    let mut problems = Vec::new();
    for (i, _) in text.match_indices(suffix) {
        let start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .map_or(0, |p| p + 1);
        let host = &text[start..i];
        // `<pod>.<service>.<namespace>` (a StatefulSet pod behind a headless Service)
        // names the Service by its last two labels.
        let labels: Vec<&str> = host.split('.').collect();
        let service = labels[labels.len().saturating_sub(2)..].join(".");
        let rest = &text[i + suffix.len()..];
        let port: Option<u64> = rest
            .strip_prefix(':')
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        let ok = match (services.get(&service), port) {
            (Some(ports), Some(p)) => ports.contains(&p),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !ok {
            problems.push(format!(
                "{file}: {host}{suffix}:{} names no Service port (known: {services:?})",
                port.map_or("?".into(), |p| p.to_string())
            ));
        }
    }
    problems
}

/// `name.namespace` -> ports of every Service in the manifests.
fn services(manifests: &[(String, String)]) -> HashMap<String, Vec<u64>> {
    let mut out = HashMap::new();
    for (_, text) in manifests {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let Ok(doc) = Value::deserialize(doc) else {
                continue;
            };
            if doc["kind"] != "Service" {
                continue;
            }
            let key = format!(
                "{}.{}",
                doc["metadata"]["name"].as_str().unwrap_or_default(),
                doc["metadata"]["namespace"].as_str().unwrap_or("default")
            );
            let ports = doc["spec"]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            out.insert(key, ports);
        }
    }
    out
}

/// Every problem of a set of Kubernetes manifests and systemd units.
fn problems(manifests: &[(String, String)], units: &[(String, String)]) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    let services = services(manifests);
    for (file, text) in manifests {
        problems.extend(dangling_addresses(file, text, &services));
        match kubernetes_command_lines(file, text) {
            Ok(lines) => {
                for line in &lines {
                    checked += usize::from(our_binary(&line.program).is_some());
                    problems.extend(check(line));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    for (file, text) in units {
        match systemd_command_line(file, text) {
            Ok(line) => {
                checked += usize::from(our_binary(&line.program).is_some());
                problems.extend(check(&line));
            }
            Err(e) => problems.push(e),
        }
    }
    (problems, checked)
}

fn read_all(dir: &Path, ext: &str) -> Vec<(String, String)> {
    files(dir, ext)
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(deploy_dir())
                .unwrap_or(&p)
                .display()
                .to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_deployment_file_runs_through_the_binaries_flag_parsers() {
    let manifests = read_all(&deploy_dir().join("kubernetes"), "yaml");
    let units = read_all(&deploy_dir().join("systemd"), "service");
    assert!(manifests.len() >= 4 && units.len() >= 2);
    let (problems, checked) = problems(&manifests, &units);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert_eq!(
        checked, 6,
        "master, HA masters, two store-service DaemonSets and two units"
    );
}

const BROKEN: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: mooncake-master, namespace: mooncake}
spec:
  ports: [{name: rpc, port: 50051}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: store, namespace: mooncake}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 20
      containers:
        - name: store
          command: ["mooncake_store_service"]
          args:
            - --global_segmnet_size=4 GB
            - --master_server_address=mooncake-master.mooncake.svc.cluster.local:50052
            - --drain_timeout=30
"#;

#[test]
fn a_misspelled_flag_a_wrong_port_and_a_short_grace_period_are_caught() {
    let (problems, checked) = problems(&[("broken.yaml".into(), BROKEN.into())], &[]);
    assert_eq!(checked, 1);
    let all = problems.join("\n");
    assert!(
        all.contains("unexpected argument '--global_segmnet_size' found"),
        "{all}"
    );
    assert!(
        all.contains("mooncake-master.mooncake.svc.cluster.local:50052 names no Service port"),
        "{all}"
    );
    assert!(
        all.contains("gets 20 s to stop but drains for up to --drain_timeout=30 s"),
        "{all}"
    );
    let unit = "[Service]\nExecStart=/usr/bin/mooncake_master --rpc_prot=50051\n";
    let (problems, _) = problems_of_unit(unit);
    assert!(
        problems
            .join("\n")
            .contains("unexpected argument '--rpc_prot' found"),
        "{problems:?}"
    );
}

fn problems_of_unit(unit: &str) -> (Vec<String>, usize) {
    problems(&[], &[("broken.service".into(), unit.into())])
}

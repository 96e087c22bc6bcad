//! gflags-compatible value parsers and the config-file merge shared by the binaries.

use std::path::Path;
use std::time::Duration;

/// `--auth_token` (or `MOONCAKE_AUTH_TOKEN`): the cluster's shared secret, flattened into
/// every binary's flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// The cluster's shared secret: required from (and presented to) the master, the
    /// metadata server's writers and peers' transfer engines. Off when empty. C++ peers
    /// cannot present it. Not encryption: see docs/configuration.md.
    #[arg(
        long = "auth_token",
        env = mooncake_metadata::AUTH_TOKEN_ENV,
        hide_env_values = true,
        default_value = ""
    )]
    pub auth_token: String,
}

/// How a store client finds its cluster: the master, the metadata service and the token.
/// One definition, flattened into the store service, `store_bench` and `mooncake_store_cli`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The master's `host:port`, or `etcd://h1:2379;h2:2379` to follow the leader of an HA
    /// group of masters.
    #[arg(long = "master_server_address", default_value = "127.0.0.1:50051")]
    pub master_server_address: String,
    /// The HA cluster whose leader an `etcd://` master address names.
    #[arg(long = "cluster_id", env = "MC_STORE_CLUSTER_ID", default_value = mooncake_store::grpc::DEFAULT_CLUSTER_ID)]
    pub cluster_id: String,
    /// Metadata connection string.
    #[arg(
        long = "metadata_server",
        default_value = "http://127.0.0.1:8080/metadata"
    )]
    pub metadata_server: String,
    /// The cluster's token (`--auth_token`).
    #[command(flatten)]
    pub auth: AuthArgs,
}

impl AuthArgs {
    /// The token, `None` when empty; an error names what is wrong with it.
    pub fn token(&self) -> Result<Option<mooncake_metadata::AuthToken>, String> {
        mooncake_metadata::AuthToken::new(&self.auth_token)
            .map_err(|e| format!("--auth_token: {e}"))
    }
}

/// gflags booleans: `1/0`, `true/false`, `yes/no`, `on/off` (case-insensitive).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "enable" => Ok(true),
        "0" | "false" | "no" | "off" | "disable" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (use true/false or 1/0)"
        )),
    }
}

/// A duration: a plain number is in `default_unit`; `500ms`, `5s`, `30m`, `1h` are explicit.
pub fn parse_duration(s: &str, default_unit: Duration) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10000, 500ms, 5s, 30m, 1h)"))?;
    let unit = match unit.trim() {
        "" => default_unit,
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("{s:?} has an unknown duration unit {other:?}")),
    };
    Ok(unit.mul_f64(n))
}

/// A duration flag in milliseconds (`--default_kv_lease_ttl=10000` or `10s`).
pub fn parse_ms(s: &str) -> Result<Duration, String> {
    parse_duration(s, Duration::from_millis(1))
}

/// A duration flag in seconds (`--client_ttl=10` or `10s`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    parse_duration(s, Duration::from_secs(1))
}

pub use mooncake_store::parse_size;

/// Reads a flat JSON or YAML config file (chosen by extension, as Mooncake does) into
/// `--key=value` arguments, with nested objects flattened to `a.b` and `renames` applied
/// (e.g. `client_live_ttl_sec` -> `client_ttl`). Put them before the command-line
/// arguments so that flags given explicitly win over the file.
pub fn config_file_args(path: &Path, renames: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let value: serde_json::Value = match ext.as_str() {
        "json" => serde_json::from_str(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))?,
        "yaml" | "yml" => serde_yaml::from_str(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))?,
        other => {
            return Err(format!(
                "config file {} has extension {other:?}; use .json, .yaml or .yml",
                path.display()
            ))
        }
    };
    let mut out = Vec::new();
    flatten("", &value, &mut out).map_err(|e| format!("config file {}: {e}", path.display()))?;
    Ok(out
        .into_iter()
        .map(|(k, v)| {
            let k = renames
                .iter()
                .find(|(from, _)| *from == k)
                .map(|(_, to)| (*to).to_owned())
                .unwrap_or(k);
            format!("--{k}={v}")
        })
        .collect())
}

fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
            Ok(())
        }
        serde_json::Value::Null if prefix.is_empty() => Ok(()),
        _ if prefix.is_empty() => Err("the top level must be a map of settings".into()),
        serde_json::Value::String(s) => {
            out.push((prefix.to_owned(), s.clone()));
            Ok(())
        }
        serde_json::Value::Array(_) => Err(format!("setting {prefix} must not be a list")),
        other => {
            out.push((prefix.to_owned(), other.to_string()));
            Ok(())
        }
    }
}

/// The line `--check_flags` prints: `<binary> flags ok: <summary>`.
pub fn checked(binary: &str, summary: &str) -> String {
    format!("{binary} flags ok: {summary}")
}

#[cfg(test)]
mod tests {
    mod decoders {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any flag value parses or gets an error message, never a panic.
            #[test]
            fn any_flag_value_parses_or_is_refused(s in ".{0,32}") {
                let _ = parse_bool(&s);
                let _ = parse_ms(&s);
                let _ = parse_secs(&s);
                let _ = parse_size(&s);
                if let Err(e) = parse_size(&s) {
                    prop_assert!(!e.to_string().is_empty());
                }
                let _ = AuthArgs { auth_token: s.clone() }.token();
            }

            /// Any config file (JSON or YAML, any bytes) becomes flags or an error naming
            /// the file, never a panic.
            #[test]
            fn any_config_file_reads_or_is_refused(
                text in prop_oneof![".{0,200}", r#"\{("[a-z_.]{1,12}": ?(-?[0-9]{1,20}|"[^"]{0,8}"|true|null|\[\]|\{\}),? ?){0,6}\}"#],
                yaml in any::<bool>(),
            ) {
                let dir = std::env::temp_dir().join(format!("mc-flags-prop-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(if yaml { "c.yaml" } else { "c.json" });
                std::fs::write(&path, &text).unwrap();
                match config_file_args(&path, &[("client_live_ttl_sec", "client_ttl")]) {
                    Ok(args) => prop_assert!(args.iter().all(|a| a.starts_with("--"))),
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
        }
    }

    use super::*;

    #[test]
    fn durations_and_booleans() {
        assert_eq!(parse_ms("10000"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_ms("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_ms("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert!(parse_ms("5 fortnights").is_err());
        assert_eq!(parse_bool("1"), Ok(true));
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn config_files_flatten_and_rename() {
        let dir = std::env::temp_dir().join(format!("mc-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("c.yaml");
        std::fs::write(&yaml, "rpc_port: 50051\nclient_live_ttl_sec: 60\nnested:\n  a: \"x\"\nenable_http_metadata_server: true\n").unwrap();
        let args = config_file_args(&yaml, &[("client_live_ttl_sec", "client_ttl")]).unwrap();
        assert_eq!(
            args,
            [
                "--client_ttl=60",
                "--enable_http_metadata_server=true",
                "--nested.a=x",
                "--rpc_port=50051"
            ]
        );
        let json = dir.join("c.json");
        std::fs::write(&json, r#"{"eviction_ratio": 0.1}"#).unwrap();
        assert_eq!(
            config_file_args(&json, &[]).unwrap(),
            ["--eviction_ratio=0.1"]
        );
        let bad = dir.join("c.toml");
        std::fs::write(&bad, "x = 1").unwrap();
        assert!(config_file_args(&bad, &[])
            .unwrap_err()
            .contains("use .json, .yaml or .yml"));
    }
}

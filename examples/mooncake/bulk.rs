//! Bulk copies between a directory and the pool, with a progress bar: `put-dir` stores
//! every regular file of a directory (key = prefix + file name), `get-dir` writes every
//! key with a prefix to a directory. File names are keys with every byte other than
//! `A-Z a-z 0-9 - _ .` percent-encoded, so `get-dir` then `put-dir` restores the same keys.

use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mooncake_store::{Client, ReplicateConfig};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::json;

use crate::http::Admin;

const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn bar(total: u64, hidden: bool, what: &str) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// The regular files of `dir` with their sizes, by name.
pub(crate) fn files(dir: &Path) -> Result<Vec<(String, std::path::PathBuf, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let meta = e.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let key = percent_decode_str(&name).decode_utf8_lossy().into_owned();
        out.push((key, e.path(), meta.len()));
    }
    out.sort();
    Ok(out)
}

/// `put-dir`: every file of `dir` under `prefix + key`.
pub(crate) async fn put_dir(
    client: &Client,
    files: &[(String, std::path::PathBuf, u64)],
    prefix: &str,
    config: &ReplicateConfig,
    json_out: bool,
) -> Result<serde_json::Value> {
    let total: u64 = files.iter().map(|f| f.2).sum();
    let bar = bar(total, json_out, "put-dir");
    for (key, path, size) in files {
        let value = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let key = format!("{prefix}{key}");
        if let Err(e) = client.put(&key, &value, config).await {
            bar.abandon();
            bail!("put {key} (from {}): {e} ({})", path.display(), e.code());
        }
        bar.inc(*size);
    }
    bar.finish_and_clear();
    Ok(json!({"stored": files.len(), "bytes": total}))
}

/// Keys starting with `prefix`, from the admin port's `/get_all_keys`.
pub(crate) fn keys_with_prefix(admin: &Admin, prefix: &str) -> Result<Vec<String>> {
    Ok(admin
        .get_text("/get_all_keys")?
        .lines()
        .filter(|k| k.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// `get-dir`: every key of `keys` into a file of `dir`.
pub(crate) async fn get_dir(
    client: &Client,
    keys: &[String],
    dir: &Path,
    json_out: bool,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bar = bar(keys.len() as u64, json_out, "get-dir");
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} keys {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut bytes = 0u64;
    for key in keys {
        let value = match client.get(key).await {
            Ok(v) => v,
            Err(e) => {
                bar.abandon();
                bail!(
                    "{key}: {e} ({}); `mooncake explain {key}` says why",
                    e.code()
                );
            }
        };
        let path = dir.join(utf8_percent_encode(key, FILE_NAME).to_string());
        std::fs::write(&path, &value).with_context(|| format!("writing {}", path.display()))?;
        bytes += value.len() as u64;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(json!({"written": keys.len(), "bytes": bytes, "dir": dir}))
}

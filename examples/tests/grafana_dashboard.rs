//! `docs/grafana-dashboard.json` queries only metrics a live master exports: every
//! metric name in every panel's PromQL must be a series of `/metrics` of a real master
//! with two store services.

use std::collections::BTreeSet;

mod ops;
use ops::{stderr, Pool};

/// Metric names in a PromQL expression: identifiers that start with one of our
/// prefixes (`master_`, `segment_`), up to the next character that cannot be in a name.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = expr;
    while let Some(i) = rest.find(|c: char| is_name(c)) {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        let word = &tail[..end];
        // A label value inside quotes or a label name is not a metric: they follow `{`
        // or `,` within a matcher, which our prefixes never start.
        if (word.starts_with("master_") || word.starts_with("segment_"))
            && !rest[..i].ends_with('"')
        {
            out.insert(word.to_owned());
        }
        rest = &tail[end..];
    }
}

fn expressions(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_a_live_master() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let mut wanted = BTreeSet::new();
    for e in &exprs {
        metric_names(e, &mut wanted);
    }
    // The panels the issue asks for are there.
    let titles: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for topic in [
        "hit rate",
        "misses by cause",
        "per segment",
        "put and get rates",
        "latency",
        "evictions",
        "drain progress",
    ] {
        let found = titles.iter().any(|t| t.contains(topic))
            || (topic == "latency" && titles.iter().any(|t| t.contains("time in the master")));
        assert!(found, "no panel about {topic}: {titles:?}");
    }
    assert!(wanted.len() >= 15, "{wanted:?}");

    let pool = Pool::start(2);
    let dir = std::env::temp_dir().join(format!("mooncake-grafana-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("v");
    std::fs::write(&file, b"value").unwrap();
    let put = pool.cli(&["put", "k", file.to_str().unwrap()]);
    assert!(put.status.success(), "{}", stderr(&put));
    let metrics = pool.http_get("/metrics");
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !exported.contains(m.as_str()))
        .collect();
    assert!(missing.is_empty(), "the dashboard queries metrics the master does not export: {missing:?}\nexported: {exported:?}");
    std::fs::remove_dir_all(&dir).ok();
}

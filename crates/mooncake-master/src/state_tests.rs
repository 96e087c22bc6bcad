use std::path::PathBuf;
use std::sync::Arc;

use mooncake_store::{ClientId, MasterApi, ReplicateConfig, Segment, SegmentId};

use super::format::{encode, FileKind, Header, Record};
use super::{StateError, LOG, SNAPSHOT};
use crate::{Master, MasterConfig, StateConfig};

const OWNER: ClientId = ClientId(0xabc);

/// A fresh directory under the system's temp dir, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "mooncake-state-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }

    fn config(&self) -> StateConfig {
        StateConfig::new(&self.0)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn segment() -> Segment {
    Segment {
        id: SegmentId(42),
        name: "store:1".into(),
        base: 0x7000_0000,
        size: 64 << 20,
        te_endpoint: "store:1".into(),
        protocol: "tcp".into(),
        host_id: "store".into(),
        durable: false,
    }
}

fn open(dir: &TempDir) -> Result<Arc<Master>, StateError> {
    Master::open(MasterConfig::default(), Some(&dir.config()))
}

/// A master on `dir` with a mounted segment and `n` objects `k0..`.
async fn filled(dir: &TempDir, n: usize) -> Arc<Master> {
    let m = open(dir).unwrap();
    m.mount_segment(OWNER, segment()).await.unwrap();
    for i in 0..n {
        let key = format!("k{i}");
        m.put_start(
            ClientId(1),
            &key,
            1000 + i as u64,
            &ReplicateConfig::default(),
        )
        .await
        .unwrap();
        m.put_end(ClientId(1), &key).await.unwrap();
    }
    m
}

async fn readable(m: &Master, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        if m.get_replica_list(&format!("k{i}")).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn a_master_killed_and_reopened_serves_every_object_after_the_remount() {
    let dir = TempDir::new("reopen");
    let m = filled(&dir, 100).await;
    let before = m.get_replica_list("k7").await.unwrap();
    m.remove("k9", true).await.unwrap();
    // No `save_state`: as after a SIGKILL, only the log has the puts.
    drop(m);
    let m = open(&dir).unwrap();
    assert_eq!(m.metrics().restored_keys(), 99);
    assert_eq!(m.keys().len(), 99);
    assert_eq!(
        readable(&m, 100).await,
        0,
        "nothing served before the remount"
    );
    let ping = m.ping(OWNER).await.unwrap();
    assert_eq!(ping.status, mooncake_store::ClientStatus::NeedRemount);
    m.remount_segments(OWNER, vec![segment()]).await.unwrap();
    assert_eq!(readable(&m, 100).await, 99);
    let after = m.get_replica_list("k7").await.unwrap();
    assert_eq!(
        after.replicas[0].buffer_address,
        before.replicas[0].buffer_address
    );
    assert!(after.replicas[0].version == before.replicas[0].version);
    // A clean shutdown leaves a snapshot and an empty log; the next start reads it.
    m.save_state().unwrap();
    drop(m);
    let log_len = std::fs::metadata(dir.file(LOG)).unwrap().len();
    let m = open(&dir).unwrap();
    assert_eq!(m.keys().len(), 99);
    assert!(
        log_len < 200,
        "the log holds only its header ({log_len} bytes)"
    );
}

#[tokio::test]
async fn a_torn_or_corrupt_log_tail_is_dropped_and_the_rest_is_kept() {
    let dir = TempDir::new("torn");
    drop(filled(&dir, 20).await);
    // A torn record: a frame header promising more bytes than there are.
    let mut log = std::fs::read(dir.file(LOG)).unwrap();
    log.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']);
    std::fs::write(dir.file(LOG), &log).unwrap();
    let m = open(&dir).unwrap();
    assert_eq!(m.keys().len(), 20);
    drop(m);

    // A corrupt last record: its put is lost, nothing else.
    let dir = TempDir::new("crc");
    drop(filled(&dir, 20).await);
    let mut log = std::fs::read(dir.file(LOG)).unwrap();
    let last = log.len() - 3;
    log[last] ^= 0x01;
    std::fs::write(dir.file(LOG), &log).unwrap();
    let m = open(&dir).unwrap();
    assert_eq!(m.keys().len(), 19);
    assert!(!m.keys().contains(&"k19".to_owned()));
}

#[tokio::test]
async fn a_corrupt_snapshot_is_a_startup_error_naming_the_file() {
    let dir = TempDir::new("snap");
    let m = filled(&dir, 5).await;
    m.save_state().unwrap();
    drop(m);
    let mut snap = std::fs::read(dir.file(SNAPSHOT)).unwrap();
    let n = snap.len();
    snap[n - 2] ^= 0x40;
    std::fs::write(dir.file(SNAPSHOT), &snap).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(matches!(&err, StateError::Corrupt { path, .. } if *path == dir.file(SNAPSHOT)));
    assert!(err.to_string().contains("snapshot"), "{err}");
}

#[test]
fn a_newer_major_format_is_refused_and_a_newer_minor_is_read() {
    let dir = TempDir::new("major");
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut buf = Vec::new();
    let header = r#"{"header":{"format_major":2,"format_minor":0,"kind":"snapshot","log_id":1,"compression":"zstd"}}"#;
    push_raw(&mut buf, header.as_bytes());
    std::fs::write(dir.file(SNAPSHOT), &buf).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, StateError::NewerFormat { major: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");

    // Minor 7 with fields this master does not know: read, the extras ignored.
    let mut buf = Vec::new();
    let header = r#"{"header":{"format_major":1,"format_minor":7,"kind":"snapshot","log_id":1,"writer":"next"}}"#;
    push_raw(&mut buf, header.as_bytes());
    let seg = r#"{"changes":[{"mount":{"segment":{"id":"0000000000000000000000000000002a","name":"s:1","base":4096,"size":1048576,"te_endpoint":"s:1","protocol":"tcp","host_id":"s","numa":1},"client":"00000000000000000000000000000abc"}},
        {"object":{"key":"a","size":10,"version":5,"owner":"00000000000000000000000000000001","replicas":[{"segment":"0000000000000000000000000000002a","offset":0}],"ttl_hint":3}}]}"#;
    push_raw(&mut buf, seg.as_bytes());
    std::fs::write(dir.file(SNAPSHOT), &buf).unwrap();
    let m = open(&dir).unwrap();
    assert_eq!(m.keys(), ["a"]);
}

#[test]
fn a_state_dir_in_use_is_refused() {
    let dir = TempDir::new("lock");
    let first = open(&dir).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, StateError::Locked(p) if *p == dir.0),
        "{err}"
    );
    drop(first);
    open(&dir).unwrap();
}

#[test]
fn a_log_older_than_its_snapshot_is_not_replayed() {
    let dir = TempDir::new("older");
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut snap = Vec::new();
    encode(
        &Record::Header(Header::new(FileKind::Snapshot, 5)),
        &mut snap,
    );
    std::fs::write(dir.file(SNAPSHOT), &snap).unwrap();
    // A log of id 4 (folded into the snapshot by a compaction cut short): what it holds
    // must not be applied again.
    let mut log = Vec::new();
    encode(&Record::Header(Header::new(FileKind::Log, 4)), &mut log);
    let mount = crate::core::Change::Mount {
        segment: crate::core::SegmentRecord::from(&segment()),
        client: OWNER,
    };
    encode(&Record::Changes(vec![mount]), &mut log);
    std::fs::write(dir.file(LOG), &log).unwrap();
    let m = open(&dir).unwrap();
    assert_eq!(m.segment_names().len(), 0);
    assert!(
        m.render_metrics()
            .contains("\nmaster_total_capacity_bytes 0\n"),
        "the stale log's mount was not replayed"
    );
}

fn push_raw(buf: &mut Vec<u8>, body: &[u8]) {
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    buf.extend_from_slice(body);
}

/// A call that allocates space but records nothing (a `put_start`) waits for the records
/// of every change before it: here an erase queued by another call that has not written
/// it yet (as while a compaction holds the writer). Otherwise the put could be placed in
/// the erased object's freed range, answered, and the erase lost with a SIGKILL: the old
/// object would come back over the new bytes. A read waits for nothing.
#[tokio::test]
async fn an_allocating_call_waits_for_the_changes_before_it_and_a_read_does_not() {
    let dir = TempDir::new("seen");
    let m = filled(&dir, 4).await;
    let state = m.state.as_ref().unwrap();
    // As a remove that freed k3's range records it.
    let freed = crate::SpaceUse {
        allocated: false,
        freed: true,
    };
    let seq = state
        .record(vec![crate::Change::Erase { key: "k3".into() }], freed)
        .unwrap();
    assert!(!state.is_written(seq), "queued, not yet written");
    assert!(m.exist_key("k0").await.unwrap());
    assert!(!state.is_written(seq), "a read does not wait");
    m.put_start(
        OWNER,
        "new",
        4096,
        &mooncake_store::ReplicateConfig::default(),
    )
    .await
    .unwrap();
    assert!(
        state.is_written(seq),
        "the put waited for the erase to reach the log"
    );
    drop(m);
    let m = open(&dir).unwrap();
    m.remount_segments(OWNER, vec![segment()]).await.unwrap();
    assert_eq!(m.keys().len(), 3, "the erase survived the kill");
}

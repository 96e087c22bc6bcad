//! Benchmarks of the metadata core: key escaping and the HTTP server's table.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mooncake_metadata::keys::{escape, KeySpace};
use mooncake_metadata::{MetadataTable, TableRequest};

fn metadata(c: &mut Criterion) {
    let ks = KeySpace::default();
    let key = ks.segment("127.0.0.1:17101");
    c.bench_function("escape_segment_key", |b| b.iter(|| escape(black_box(&key))));
    let table = MetadataTable::new();
    let value = Bytes::from(vec![b'x'; 2700]);
    c.bench_function("table_put_get", |b| {
        b.iter(|| {
            table.handle(TableRequest::Put {
                key: Some(key.clone()),
                body: value.clone(),
            });
            table.handle(TableRequest::Get {
                key: Some(key.clone()),
            })
        })
    });
}

criterion_group!(benches, metadata);
criterion_main!(benches);

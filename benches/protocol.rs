//! Hot paths of the wire protocol: `cargo bench --bench protocol`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssechan::protocol::event::{encode_data, put_id_line};
use ssechan::protocol::parser::{EventStreamParser, Parsed};
use ssechan::protocol::reorder::{ReorderBuffer, ReorderLimits};
use ssechan::protocol::{decode_message_body, encode_message_body};

/// A stream of `n` message events as the server writes them.
fn stream(n: usize) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    for i in 0..n {
        put_id_line(&mut buf, i as u64 + 1);
        buf.extend_from_slice(&encode_data(&format!("{i:08} payload of a typical size ........")));
    }
    buf.to_vec()
}

fn parser(c: &mut Criterion) {
    let n = 10_000;
    let input = stream(n);
    let mut g = c.benchmark_group("parser");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("10k events in 16 KiB chunks", |b| {
        b.iter(|| {
            let mut p = EventStreamParser::new();
            let mut events = 0;
            for chunk in input.chunks(16 * 1024) {
                p.feed(chunk);
                while let Ok(Some(item)) = p.next_item() {
                    if let Parsed::Event(e) = item {
                        black_box(&e);
                        events += 1;
                    }
                }
            }
            assert_eq!(events, n);
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let msg = "0000042 payload of a typical size with a \"quote\" and\na newline";
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode event data", |b| b.iter(|| encode_data(black_box(msg))));
    let body = encode_message_body(msg);
    g.bench_function("decode POST body", |b| b.iter(|| decode_message_body(black_box(&body))));
    g.finish();
}

fn reorder(c: &mut Criterion) {
    let n = 4096u64;
    let ids: Vec<u64> = (0..n).map(|i| (i * 1031) % n).collect();
    let mut g = c.benchmark_group("reorder");
    g.throughput(Throughput::Elements(n));
    g.bench_function("4096 shuffled offers", |b| {
        b.iter(|| {
            let mut r: ReorderBuffer =
                ReorderBuffer::new(0, ReorderLimits { window: n, max_bytes: usize::MAX });
            let mut out = 0;
            for &id in &ids {
                r.offer(id, String::new());
                while r.pop_ready().is_some() {
                    out += 1;
                }
            }
            assert_eq!(out, n);
        })
    });
    g.finish();
}

criterion_group!(benches, parser, codec, reorder);
criterion_main!(benches);

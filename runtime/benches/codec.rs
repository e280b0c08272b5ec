//! Micro-benchmarks of the hot path's pieces: UTF-16 length counting, frame decoding and
//! encoding, packet parsing and route lookup. `cargo bench -p nestling-runtime`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nestling_runtime::codec::{encode_frame, NestCodec};
use nestling_runtime::packet::{parse_inbound, parse_reply, Wire};
use nestling_runtime::utf16::utf16_len;
use tokio_util::codec::Decoder;

fn texts() -> Vec<(&'static str, String)> {
    let ascii = format!(
        r#"{{"pattern":"sum","data":[{}],"id":"123456"}}"#,
        "1,".repeat(300) + "1"
    );
    let cjk = format!(r#"{{"pattern":"log","data":"{}"}}"#, "求和1111".repeat(100));
    let emoji = format!(r#"{{"pattern":"log","data":"{}"}}"#, "a😀b".repeat(150));
    vec![("ascii", ascii), ("cjk", cjk), ("emoji", emoji)]
}

fn utf16(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf16_len");
    for (name, text) in texts() {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| b.iter(|| utf16_len(black_box(&text))));
    }
    g.finish();
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for (name, text) in texts() {
        let mut wire = BytesMut::new();
        encode_frame(&text, &mut wire);
        let wire = wire.freeze();
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("encode/{name}"), |b| {
            let mut out = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                encode_frame(black_box(&text), &mut out);
            })
        });
        g.bench_function(format!("decode/{name}"), |b| {
            let mut codec = NestCodec::new();
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                black_box(codec.decode(&mut buf).unwrap().unwrap());
            })
        });
    }
    g.finish();
}

fn packets(c: &mut Criterion) {
    let mut g = c.benchmark_group("packet");
    let request =
        Bytes::from_static(br#"{"pattern":"sum","data":[1,2,3],"id":"39c17211f6ab3cd75c3bb"}"#);
    g.bench_function("parse_inbound", |b| {
        b.iter(|| black_box(parse_inbound(black_box(&request)).unwrap()))
    });
    let reply = Bytes::from_static(br#"{"response":6,"isDisposed":true,"id":"12345"}"#);
    g.bench_function("parse_reply", |b| {
        b.iter(|| black_box(parse_reply(black_box(&reply)).unwrap()))
    });
    g.bench_function("response", |b| {
        let mut out = BytesMut::with_capacity(64);
        b.iter(|| {
            out.clear();
            Wire::Tcp.response(&mut out, Some(b"6"), br#""39c17211f6ab3cd75c3bb""#);
        })
    });
    g.finish();
}

criterion_group!(benches, utf16, frames, packets);
criterion_main!(benches);

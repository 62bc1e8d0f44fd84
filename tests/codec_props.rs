//! Property tests of the frame decoder: for arbitrary byte streams cut into
//! arbitrary chunks, decoding never panics, never holds more than the frame limit,
//! and yields the same outcomes however the stream is cut. Well-formed streams of
//! objects decode to exactly the objects written, whatever separates them.

use proptest::prelude::*;
use serde_json::{Map, Value};
use tcphub::codec::{Decoded, FrameDecoder};

/// Small, so that generated streams cross the limit often.
const MAX_FRAME_BYTES: usize = 64;

/// Feeds `stream` in chunks of the given sizes (cycled; the rest in one piece when
/// there are none), checking the memory bound after every feed.
fn decode_cut(stream: &[u8], sizes: &[usize], max_frame_bytes: usize) -> Vec<Decoded> {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        decoder.feed(chunk, |decoded| out.push(decoded));
        assert!(
            decoder.pending_len() <= max_frame_bytes,
            "holds {} bytes, limit {max_frame_bytes}",
            decoder.pending_len()
        );
        rest = tail;
    }
    out
}

/// Streams that exercise the scanner: JSON-ish tokens (quotes, escapes, brackets,
/// whitespace, multi-byte UTF-8) mixed with raw bytes.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b" \r\t".to_vec()),
        Just(b":,".to_vec()),
        Just(b"{\"type\":\"ping\"}".to_vec()),
        Just(b"{\"type\":\"sync\",\"clientName\":\"a}\\\"b\"}".to_vec()),
        Just(b"12.5e3".to_vec()),
        Just(b"true".to_vec()),
        Just("é€😀".as_bytes().to_vec()),
        Just(vec![0xff, 0xfe, 0xc3]),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..80, 0..12)
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Quarters print exactly; arbitrary floats need serde_json's float_roundtrip.
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 4.0)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..5)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        // Failures are printed with their minimal input; no files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_decode_the_same_however_they_are_cut(
        stream in prop::collection::vec(any::<u8>(), 0..400),
        sizes in chunk_sizes(),
    ) {
        let whole = decode_cut(&stream, &[], MAX_FRAME_BYTES);
        prop_assert_eq!(decode_cut(&stream, &sizes, MAX_FRAME_BYTES), whole);
    }

    #[test]
    fn json_like_streams_decode_the_same_however_they_are_cut(
        stream in hostile_stream(),
        sizes in chunk_sizes(),
    ) {
        let whole = decode_cut(&stream, &[], MAX_FRAME_BYTES);
        prop_assert_eq!(decode_cut(&stream, &sizes, MAX_FRAME_BYTES), whole);
    }

    #[test]
    fn objects_come_out_as_written_whatever_separates_them(
        objects in prop::collection::vec(json_object(), 1..8),
        separators in prop::collection::vec(prop::sample::select(vec!["", "\n", " ", "\r\n", "\t \n"]), 8),
        sizes in chunk_sizes(),
    ) {
        let mut stream = Vec::new();
        for (object, separator) in objects.iter().zip(&separators) {
            serde_json::to_writer(&mut stream, object).unwrap();
            stream.extend_from_slice(separator.as_bytes());
        }
        let want: Vec<Decoded> = objects.iter().cloned().map(Decoded::Frame).collect();
        prop_assert_eq!(decode_cut(&stream, &sizes, usize::MAX), want);
    }

    #[test]
    fn an_over_long_frame_is_too_large_and_ends_the_stream(
        prefix in prop::collection::vec(json_object(), 0..3),
        excess in 1usize..(3 * MAX_FRAME_BYTES),
        finished in any::<bool>(),
        sizes in chunk_sizes(),
    ) {
        let lines: Vec<Vec<u8>> = prefix.iter().map(|o| serde_json::to_vec(o).unwrap()).collect();
        let limit = lines.iter().map(Vec::len).max().unwrap_or(0).max(MAX_FRAME_BYTES);
        let mut stream = lines.join(&b'\n');
        stream.push(b'\n');
        let frame_start = stream.len();
        stream.extend_from_slice(b"{\"pad\":\"");
        stream.resize(frame_start + limit + excess, b'x');
        if finished {
            stream.extend_from_slice(b"\"}");
        }
        stream.extend_from_slice(b"\n{\"type\":\"ping\"}\n");
        let out = decode_cut(&stream, &sizes, limit);
        prop_assert_eq!(out.len(), prefix.len() + 1, "{:?}", out);
        prop_assert_eq!(out.last(), Some(&Decoded::TooLarge));
    }
}

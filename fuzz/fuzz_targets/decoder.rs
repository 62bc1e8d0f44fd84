//! Coverage-guided fuzzing of the frame decoder: arbitrary bytes cut into
//! arbitrary chunks must never panic, never hold more than the frame limit, and
//! decode to exactly what the same bytes decode to in one piece.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcphub::codec::{Decoded, FrameDecoder};

/// Small enough that the fuzzer reaches the limit often.
const MAX_FRAME_BYTES: usize = 256;

fuzz_target!(|input: &[u8]| {
    // The first bytes choose the chunk sizes; the rest is the stream.
    let (cuts, stream) = input.split_at(input.len().min(8));
    let whole = decode(stream, &[]);
    let chunked = decode(stream, cuts);
    assert_eq!(
        whole, chunked,
        "the outcome depends on how the stream is cut"
    );
});

/// Decodes `stream` fed in chunks whose sizes cycle through `cuts` (in one piece
/// when `cuts` is empty), checking the memory bound after every feed.
fn decode(stream: &[u8], cuts: &[u8]) -> Vec<Decoded> {
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = cuts.iter().map(|&size| usize::from(size) + 1).cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        decoder.feed(chunk, |decoded| out.push(decoded));
        assert!(decoder.pending_len() <= MAX_FRAME_BYTES);
        rest = tail;
    }
    out
}

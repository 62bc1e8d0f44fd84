//! Turns the bytes a client writes into JSON values, one per frame.
//!
//! Clients may separate objects with whitespace or with nothing at all, and an
//! object may arrive split over many reads. A small scanner finds where each value
//! ends (tracking nesting and strings), so every byte is scanned once however the
//! stream is cut; serde_json then parses the complete value. The decoder holds no
//! buffer between frames: only the unfinished tail of a frame is kept, and the
//! allocation is released as soon as that frame completes.

use serde_json::Value;

/// One outcome of decoding.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A complete JSON value.
    Frame(Value),
    /// Bytes that are not JSON; the decoder has skipped to the next newline.
    InvalidJson(String),
    /// A value longer than the frame limit; the connection must be closed.
    TooLarge,
}

/// Incremental decoder for one connection's inbound stream.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    /// The unfinished frame so far; empty (and unallocated) between frames.
    pending: Vec<u8>,
    scan: Scan,
    /// After invalid JSON, bytes are dropped up to and including the next `\n`.
    skipping: bool,
    too_large: bool,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            max_frame_bytes,
            pending: Vec::new(),
            scan: Scan::default(),
            skipping: false,
            too_large: false,
        }
    }

    /// Feeds freshly read bytes, reporting each outcome in stream order.
    ///
    /// After [`Decoded::TooLarge`] the decoder reports nothing more.
    pub fn feed(&mut self, input: &[u8], mut on: impl FnMut(Decoded)) {
        if self.too_large {
            return;
        }
        if self.pending.is_empty() {
            let consumed = self.decode(input, &mut on);
            self.pending.extend_from_slice(&input[consumed..]);
        } else {
            self.pending.extend_from_slice(input);
            let pending = std::mem::take(&mut self.pending);
            let consumed = self.decode(&pending, &mut on);
            if consumed < pending.len() {
                self.pending = pending;
                self.pending.drain(..consumed);
            }
        }
        if self.too_large {
            self.pending = Vec::new();
        }
    }

    /// Whether the decoder holds no state: no unfinished frame, nothing to skip.
    /// Such a decoder need not be kept between reads.
    pub fn is_between_frames(&self) -> bool {
        self.pending.is_empty() && self.scan.is_fresh() && !self.skipping && !self.too_large
    }

    /// Bytes held for an unfinished frame.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Decodes what `data` holds and returns how many bytes were consumed; the
    /// rest starts an unfinished frame.
    fn decode(&mut self, data: &[u8], on: &mut impl FnMut(Decoded)) -> usize {
        let mut start = 0;
        loop {
            if self.skipping {
                match data[start..].iter().position(|&b| b == b'\n') {
                    Some(newline) => {
                        start += newline + 1;
                        self.skipping = false;
                    }
                    None => return data.len(),
                }
            }
            if self.scan.is_fresh() {
                while start < data.len() && data[start].is_ascii_whitespace() {
                    start += 1;
                }
            }
            let frame = &data[start..];
            if frame.is_empty() {
                return start;
            }
            let Some(len) = self.scan.find_end(frame) else {
                if frame.len() > self.max_frame_bytes {
                    self.too_large = true;
                    on(Decoded::TooLarge);
                    return data.len();
                }
                return start;
            };
            self.scan = Scan::default();
            if len > self.max_frame_bytes {
                self.too_large = true;
                on(Decoded::TooLarge);
                return data.len();
            }
            match serde_json::from_slice(&frame[..len]) {
                Ok(value) => on(Decoded::Frame(value)),
                Err(err) => {
                    self.skipping = true;
                    on(Decoded::InvalidJson(err.to_string()));
                }
            }
            start += len;
        }
    }
}

/// Where the scanner is inside the current value, kept across reads so that no
/// byte is scanned twice.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of the current value already scanned.
    scanned: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl Scan {
    fn is_fresh(&self) -> bool {
        self.scanned == 0
    }

    /// The length of the value that starts at `frame[0]`, once it is complete.
    ///
    /// Objects, arrays and strings end at their closing byte; any other value ends
    /// at the next whitespace or structural byte. Whether the value is valid JSON is
    /// left to the parser.
    fn find_end(&mut self, frame: &[u8]) -> Option<usize> {
        let first = frame[0];
        let is_scalar = !matches!(first, b'{' | b'[' | b'"');
        if is_scalar {
            let end = frame
                .iter()
                .skip(self.scanned)
                .position(|&b| b.is_ascii_whitespace() || b"{}[],:\"".contains(&b));
            return match end.map(|offset| self.scanned + offset) {
                Some(0) => Some(1),
                Some(end) => Some(end),
                None => {
                    self.scanned = frame.len();
                    None
                }
            };
        }
        for (at, &byte) in frame.iter().enumerate().skip(self.scanned) {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(at + 1);
                    }
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(at + 1);
                    }
                }
                _ => {}
            }
        }
        self.scanned = frame.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_in_chunks(stream: &[u8], chunk: usize, max: usize) -> Vec<Decoded> {
        let mut decoder = FrameDecoder::new(max);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            decoder.feed(piece, |d| out.push(d));
        }
        out
    }

    fn frames(values: &[Value]) -> Vec<Decoded> {
        values.iter().cloned().map(Decoded::Frame).collect()
    }

    #[test]
    fn back_to_back_objects_decode_at_every_split_point() {
        let stream = br#"{"type":"sync","clientName":"Client-1","message":" a}\"b "}{"type":"info","message":[1,{"x":"]"}]}"#;
        let want = frames(&[
            json!({"type":"sync","clientName":"Client-1","message":" a}\"b "}),
            json!({"type":"info","message":[1,{"x":"]"}]}),
        ]);
        for chunk in 1..=stream.len() {
            assert_eq!(
                decode_in_chunks(stream, chunk, 65536),
                want,
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn newline_delimited_objects_decode() {
        let stream = b"{\"type\":\"ping\"}\n\r\n  {\"type\":\"ping\"}\n";
        let ping = json!({"type":"ping"});
        assert_eq!(
            decode_in_chunks(stream, 3, 100),
            frames(&[ping.clone(), ping])
        );
    }

    #[test]
    fn garbage_is_reported_then_skipped_to_the_next_newline() {
        let stream = b"not json {\"type\":\"ping\"}\n{\"type\":\"ping\"}";
        for chunk in 1..=stream.len() {
            let out = decode_in_chunks(stream, chunk, 100);
            assert_eq!(out.len(), 2, "chunk size {chunk}: {out:?}");
            assert!(matches!(out[0], Decoded::InvalidJson(_)));
            assert_eq!(out[1], Decoded::Frame(json!({"type":"ping"})));
        }
    }

    #[test]
    fn invalid_object_and_invalid_utf8_are_invalid_json() {
        let stream = b"{\"a\":tru}\n{\"b\":\"\xff\"}\n[1]";
        let out = decode_in_chunks(stream, 4, 100);
        assert!(matches!(out[0], Decoded::InvalidJson(_)), "{out:?}");
        assert!(matches!(out[1], Decoded::InvalidJson(_)), "{out:?}");
        assert_eq!(out[2], Decoded::Frame(json!([1])));
    }

    #[test]
    fn an_over_long_frame_is_too_large_whether_finished_or_not() {
        let long = format!("{{\"type\":\"info\",\"message\":\"{}\"}}", "x".repeat(200));
        assert_eq!(
            decode_in_chunks(long.as_bytes(), 7, 100),
            vec![Decoded::TooLarge]
        );
        let endless = format!("{{\"type\":\"info\",\"message\":\"{}", "x".repeat(200));
        assert_eq!(
            decode_in_chunks(endless.as_bytes(), 7, 100),
            vec![Decoded::TooLarge]
        );
    }

    #[test]
    fn a_frame_of_exactly_the_limit_is_accepted() {
        let frame = br#"{"type":"ping"}"#;
        assert_eq!(
            decode_in_chunks(frame, 5, frame.len()),
            frames(&[json!({"type":"ping"})])
        );
    }

    #[test]
    fn deep_nesting_is_invalid_json_not_a_crash() {
        let deep = format!(
            "{}{}\n{{\"type\":\"ping\"}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let out = decode_in_chunks(deep.as_bytes(), 1000, 65536);
        assert!(matches!(out[0], Decoded::InvalidJson(_)), "{out:?}");
        assert_eq!(out[1], Decoded::Frame(json!({"type":"ping"})));
    }

    #[test]
    fn no_buffer_is_held_between_frames() {
        let mut decoder = FrameDecoder::new(100);
        decoder.feed(b"{\"type\":", |_| {});
        assert_eq!(decoder.pending_len(), 8);
        decoder.feed(b"\"ping\"}", |_| {});
        assert_eq!(decoder.pending_len(), 0);
        assert_eq!(decoder.pending.capacity(), 0);
    }
}

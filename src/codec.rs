//! Turns the bytes a client writes into JSON values, one per frame.
//!
//! Clients may separate objects with whitespace or with nothing at all, and an
//! object may arrive split over many reads. A small scanner finds where each value
//! ends (tracking nesting and strings), so every byte is scanned once however the
//! stream is cut; serde_json then parses the complete value. The decoder holds no
//! buffer between frames: only the unfinished tail of a frame is kept, and the
//! allocation is released as soon as that frame completes. A value nested deeper
//! than serde_json parses is refused as soon as the scanner sees it, so it is
//! never buffered.

use serde_json::Value;

/// Deepest nesting of arrays and objects that serde_json parses; one level more
/// is its "recursion limit exceeded".
pub const MAX_DEPTH: u32 = 127;

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

    /// Drops the unfinished frame and stops decoding, as after [`Decoded::TooLarge`].
    pub fn give_up(&mut self) {
        self.too_large = true;
        self.pending = Vec::new();
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
            let len = match self.scan.find_end(frame) {
                End::Complete(len) => len,
                // Past the frame limit the frame is too large, however deep: the
                // same bytes must decode the same however the reads cut them.
                End::TooDeep(at) if at >= self.max_frame_bytes => {
                    self.too_large = true;
                    on(Decoded::TooLarge);
                    return data.len();
                }
                End::TooDeep(at) => {
                    self.scan = Scan::default();
                    self.skipping = true;
                    on(Decoded::InvalidJson(format!(
                        "recursion limit exceeded: nested deeper than {MAX_DEPTH} levels"
                    )));
                    start += at + 1;
                    continue;
                }
                End::Unfinished if frame.len() > self.max_frame_bytes => {
                    self.too_large = true;
                    on(Decoded::TooLarge);
                    return data.len();
                }
                End::Unfinished => return start,
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

/// Where the scanner found the current value to end.
enum End {
    /// The value is this many bytes long.
    Complete(usize),
    /// The value opens one level more than [`MAX_DEPTH`] at this offset.
    TooDeep(usize),
    /// More bytes are needed.
    Unfinished,
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

    /// Where the value that starts at `frame[0]` ends, once it is complete.
    ///
    /// Objects, arrays and strings end at their closing byte; any other value ends
    /// at the next whitespace or structural byte. Whether the value is valid JSON is
    /// left to the parser, except for nesting the parser would refuse.
    fn find_end(&mut self, frame: &[u8]) -> End {
        let first = frame[0];
        let is_scalar = !matches!(first, b'{' | b'[' | b'"');
        if is_scalar {
            let end = frame
                .iter()
                .skip(self.scanned)
                .position(|&b| b.is_ascii_whitespace() || b"{}[],:\"".contains(&b));
            return match end.map(|offset| self.scanned + offset) {
                Some(0) => End::Complete(1),
                Some(end) => End::Complete(end),
                None => {
                    self.scanned = frame.len();
                    End::Unfinished
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
                        return End::Complete(at + 1);
                    }
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return End::TooDeep(at);
                    }
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return End::Complete(at + 1);
                    }
                }
                _ => {}
            }
        }
        self.scanned = frame.len();
        End::Unfinished
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
    fn nesting_that_passes_the_limit_after_the_frame_limit_is_too_large_however_cut() {
        // 200 bytes of string, then 128 opening brackets: the frame is over its
        // 256-byte limit before it is too deep, in one read or in many.
        let input = format!("[\"{}\",{}", "x".repeat(200), "[".repeat(128));
        for chunk in [1, 7, 64, input.len()] {
            assert_eq!(
                decode_in_chunks(input.as_bytes(), chunk, 256),
                vec![Decoded::TooLarge],
                "chunks of {chunk}"
            );
        }
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
    fn nesting_is_accepted_up_to_the_parsers_limit_and_refused_at_once_past_it() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest: Value = serde_json::from_str(&nested(MAX_DEPTH as usize)).unwrap();
        assert_eq!(
            decode_in_chunks(nested(MAX_DEPTH as usize).as_bytes(), 7, 65536),
            frames(&[deepest])
        );
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH as usize + 1)).is_err());
        // Refused before the value ends and before any newline: nothing is kept.
        let mut decoder = FrameDecoder::new(65536);
        let mut out = Vec::new();
        decoder.feed("[".repeat(10_000).as_bytes(), |d| out.push(d));
        assert_eq!(
            out,
            vec![Decoded::InvalidJson(
                "recursion limit exceeded: nested deeper than 127 levels".into()
            )]
        );
        assert_eq!(decoder.pending_len(), 0);
        decoder.feed(b"]]]\n{\"type\":\"ping\"}", |d| out.push(d));
        assert_eq!(out[1..], frames(&[json!({"type":"ping"})]));
    }

    #[test]
    fn giving_up_drops_the_unfinished_frame_and_reports_nothing_more() {
        let mut decoder = FrameDecoder::new(100);
        decoder.feed(b"{\"type\":", |_| {});
        decoder.give_up();
        assert_eq!(decoder.pending.capacity(), 0);
        let mut out = Vec::new();
        decoder.feed(b"\"ping\"}{\"type\":\"ping\"}", |d| out.push(d));
        assert_eq!(out, vec![]);
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

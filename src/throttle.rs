//! The inbound rate limit of one connection: a token bucket for frames and one
//! for bytes, each kept as the instant at which it would be full again (the
//! generic cell rate algorithm), so a connection's budget is two instants and
//! needs no timer until it runs dry.
//!
//! Bytes are spent after they are read (the socket has already delivered them),
//! so a bucket may go into debt; the connection then stops reading until the
//! debt is paid, which is TCP backpressure on the sender: nothing is lost.

use std::time::Duration;

use tokio::time::Instant;

/// How fast one connection may send: per second, with a burst of `burst` worth
/// of the rate. A rate of 0 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundRate {
    /// Frames (and invalid-JSON errors) per second.
    pub frames_per_sec: u64,
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// How much of the rate a quiet connection may save up and spend at once.
    pub burst: Duration,
}

impl InboundRate {
    /// Whether either rate limits anything.
    pub fn is_limited(&self) -> bool {
        self.frames_per_sec > 0 || self.bytes_per_sec > 0
    }
}

/// What a connection has spent of its rate.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    frames_full_at: Instant,
    bytes_full_at: Instant,
}

impl Budget {
    /// A full budget.
    pub fn new(now: Instant) -> Budget {
        Budget {
            frames_full_at: now,
            bytes_full_at: now,
        }
    }

    /// Spends what one read brought in; returns when reading may resume if the
    /// connection is past its burst.
    pub fn spend(
        &mut self,
        rate: &InboundRate,
        frames: u64,
        bytes: u64,
        now: Instant,
    ) -> Option<Instant> {
        spend(&mut self.frames_full_at, frames, rate.frames_per_sec, now);
        spend(&mut self.bytes_full_at, bytes, rate.bytes_per_sec, now);
        let full_at = self.frames_full_at.max(self.bytes_full_at);
        // Within the burst, the bucket still holds tokens.
        let resume = full_at.checked_sub(rate.burst).unwrap_or(now);
        (resume > now).then_some(resume)
    }
}

fn spend(full_at: &mut Instant, amount: u64, per_sec: u64, now: Instant) {
    if per_sec == 0 {
        return;
    }
    let nanos = u128::from(amount) * 1_000_000_000 / u128::from(per_sec);
    let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    *full_at = (*full_at).max(now) + cost;
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: InboundRate = InboundRate {
        frames_per_sec: 100,
        bytes_per_sec: 10_000,
        burst: Duration::from_secs(2),
    };

    #[test]
    fn a_burst_passes_and_the_next_frame_waits_for_its_token() {
        let now = Instant::now();
        let mut budget = Budget::new(now);
        // Two seconds of 100 frames a second.
        assert_eq!(budget.spend(&RATE, 200, 200, now), None);
        let resume = budget.spend(&RATE, 1, 1, now);
        assert_eq!(resume, Some(now + Duration::from_millis(10)));
        // After waiting, one frame's token has come back, and only one.
        let later = now + Duration::from_millis(10);
        assert_eq!(
            budget.spend(&RATE, 1, 1, later),
            Some(later + Duration::from_millis(10))
        );
    }

    #[test]
    fn bytes_are_limited_on_their_own() {
        let now = Instant::now();
        let mut budget = Budget::new(now);
        assert_eq!(budget.spend(&RATE, 1, 20_000, now), None);
        // 5,000 bytes of debt at 10,000 a second: half a second.
        assert_eq!(
            budget.spend(&RATE, 1, 5_000, now),
            Some(now + Duration::from_millis(500))
        );
    }

    #[test]
    fn a_quiet_connection_saves_up_no_more_than_the_burst() {
        let now = Instant::now();
        let mut budget = Budget::new(now);
        let much_later = now + Duration::from_secs(3600);
        assert_eq!(budget.spend(&RATE, 200, 0, much_later), None);
        assert!(budget.spend(&RATE, 1, 0, much_later).is_some());
    }

    #[test]
    fn a_zero_rate_is_unlimited() {
        let rate = InboundRate {
            frames_per_sec: 0,
            bytes_per_sec: 0,
            burst: Duration::ZERO,
        };
        assert!(!rate.is_limited());
        let now = Instant::now();
        let mut budget = Budget::new(now);
        assert_eq!(budget.spend(&rate, u64::MAX, u64::MAX, now), None);
    }
}

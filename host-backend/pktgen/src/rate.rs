//! The rate limiter: a token bucket consulted once per batch.
//!
//! Tokens (packets) accrue at the configured rate up to a burst of one batch. A sender asks
//! how many packets it may send now, sends at most that many, and takes what it sent; when
//! none are allowed it sleeps once until enough have accrued for the next batch — never a
//! sleep per packet. The bucket holds at most two milliseconds of traffic and a sender sleeps
//! for about one, so low rates stay smooth and a late wake-up loses nothing.

use std::time::Duration;

/// A token bucket. Times are offsets from any fixed origin (the caller's start instant), so
/// the arithmetic is testable without a clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_pps: f64,
    /// Capacity: two milliseconds of traffic, at least one packet.
    burst: f64,
    /// Tokens a sleeping sender waits for: a batch, at most half the capacity.
    wake_at: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A bucket for `rate_pps` packets per second (> 0) sent in batches of up to `batch`,
    /// full at `now`.
    pub fn new(rate_pps: u64, batch: u32, now: Duration) -> Self {
        let rate_pps = rate_pps.max(1) as f64;
        let burst = (rate_pps / 500.0).max(1.0);
        TokenBucket {
            rate_pps,
            burst,
            wake_at: f64::from(batch.max(1)).min(burst / 2.0).max(1.0),
            tokens: burst,
            last: now,
        }
    }

    /// The most packets this bucket grants at once.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_pps).min(self.burst);
            self.last = now;
        }
    }

    /// Packets that may be sent at `now`.
    pub fn available(&mut self, now: Duration) -> u32 {
        self.refill(now);
        // The epsilon absorbs rounding in the refill, so whole tokens are not lost to it.
        (self.tokens + 1e-6) as u32
    }

    /// Records `n` packets sent.
    pub fn take(&mut self, n: u32) {
        self.tokens = (self.tokens - f64::from(n)).max(0.0);
    }

    /// How long after the last refill until `want` packets are available, capped at a
    /// batch and at half the capacity: a sleep that overshoots by up to as much again loses
    /// no tokens.
    pub fn time_until(&self, want: u32) -> Duration {
        let want = f64::from(want.max(1)).min(self.wake_at);
        let missing = want - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate_pps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_with_one_burst_then_grants_at_the_rate() {
        let mut b = TokenBucket::new(100_000, 512, Duration::ZERO);
        assert_eq!(b.burst(), 200, "capped at 2 ms of traffic");
        assert_eq!(b.available(Duration::ZERO), 200);
        b.take(200);
        assert_eq!(b.available(Duration::ZERO), 0);
        assert_eq!(b.time_until(512), MS, "sleeps for half a burst");
        assert_eq!(b.available(MS / 2), 50);
        assert_eq!(b.available(MS * 10), 200, "never more than a burst");
    }

    /// Packets a sender sends in one simulated second at `rate`, when each sleep lasts
    /// `late(asked)`; and how many times it slept.
    fn simulate(rate: u64, late: impl Fn(Duration) -> Duration) -> (u64, u64) {
        let mut b = TokenBucket::new(rate, 512, Duration::ZERO);
        let mut now = Duration::ZERO;
        let (mut sent, mut sleeps) = (0u64, 0u64);
        while now < Duration::from_secs(1) {
            let n = b.available(now);
            if n == 0 {
                now += late(b.time_until(512)).max(Duration::from_nanos(1));
                sleeps += 1;
                continue;
            }
            b.take(n);
            sent += u64::from(n);
        }
        (sent, sleeps)
    }

    #[test]
    fn simulated_sender_keeps_the_rate_over_a_second() {
        for rate in [1_000, 100_000, 1_000_000, 20_000_000] {
            let (sent, sleeps) = simulate(rate, |d| d);
            let err = (sent as f64 - rate as f64).abs() / rate as f64;
            assert!(err < 0.01, "sent {sent} in 1 s at {rate} pps");
            assert!(
                sleeps <= rate / 256 + 2100,
                "{sleeps} sleeps at {rate} pps: one per batch, not per packet"
            );
        }
    }

    #[test]
    fn late_wake_ups_do_not_lower_the_rate() {
        // Every sleep lasts 80% longer than asked, plus 50 µs of scheduling delay.
        let late = |d: Duration| d * 9 / 5 + Duration::from_micros(50);
        for rate in [10_000, 300_000, 1_000_000, 20_000_000] {
            let (sent, _) = simulate(rate, late);
            let err = (sent as f64 - rate as f64).abs() / rate as f64;
            assert!(err < 0.01, "sent {sent} in 1 s at {rate} pps");
        }
    }

    #[test]
    fn high_rates_sleep_for_a_batch_and_keep_two_milliseconds_of_tokens() {
        let mut b = TokenBucket::new(20_000_000, 512, Duration::ZERO);
        assert_eq!(b.burst(), 40_000);
        let n = b.available(Duration::ZERO);
        b.take(n);
        assert_eq!(
            b.time_until(4096),
            Duration::from_nanos(25_600),
            "one batch"
        );
    }

    #[test]
    fn low_rates_send_single_packets_without_waiting_for_a_batch() {
        let mut b = TokenBucket::new(10, 512, Duration::ZERO);
        assert_eq!(b.burst(), 1);
        let n = b.available(Duration::ZERO);
        b.take(n);
        assert_eq!(b.time_until(512), Duration::from_millis(100));
        assert_eq!(b.available(Duration::from_millis(99)), 0);
        assert_eq!(b.available(Duration::from_millis(100)), 1);
    }

    #[test]
    fn taking_more_than_granted_does_not_go_negative() {
        let mut b = TokenBucket::new(1000, 8, Duration::ZERO);
        b.take(1000);
        assert_eq!(b.available(MS), 1);
    }
}

//! Gentle recovery ([`ConfigBuilder::recovery_ramp`](crate::ConfigBuilder::recovery_ramp)): a
//! breaker that closes on its probes' successes admits a rising fraction of each process's calls
//! over the ramp, instead of the whole fleet's load at once.

use serde::Serialize;
use std::time::Duration;

/// A recovery ramp that runs: the fraction of calls each process admits rises linearly from
/// `start_permille` per mille to all of them over `length`, of which `left` was left when this
/// was read. Every process computes the fraction from the time left that Redis returned (no
/// clock is compared across hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ramp {
    /// Time left of the ramp when it was read.
    pub left: Duration,
    /// The ramp's whole length (the `recovery_ramp` of the process whose probe closed the breaker).
    pub length: Duration,
    /// The fraction admitted when the ramp began, per mille (its `ramp_start` x 1000).
    pub start_permille: u16,
}

impl Ramp {
    /// A ramp of `length` that starts at `start_permille` per mille with `left` to go.
    pub fn new(left: Duration, length: Duration, start_permille: u16) -> Ramp {
        Ramp { left, length, start_permille }
    }

    pub(crate) fn of(r: &crate::protocol::Ramp) -> Ramp {
        Ramp {
            left: Duration::from_millis(r.left_ms),
            length: Duration::from_millis(r.len_ms),
            start_permille: u16::try_from(r.permille.min(1000)).unwrap_or(1000),
        }
    }

    /// The fraction of calls admitted when it was read, in `[start, 1]`.
    pub fn admitted(&self) -> f64 {
        admitted(self.left.as_secs_f64() * 1000.0, self.length.as_secs_f64() * 1000.0, self.start_permille.into())
    }
}

impl Serialize for Ramp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut st = s.serialize_struct("Ramp", 4)?;
        st.serialize_field("left_ms", &ms(self.left))?;
        st.serialize_field("length_ms", &ms(self.length))?;
        st.serialize_field("start_permille", &self.start_permille)?;
        st.serialize_field("admitted", &self.admitted())?;
        st.end()
    }
}

/// The fraction of calls a ramp of `len_ms` that starts at `permille` admits with `left_ms` to
/// go: linear from the start to 1 (1 once it is over).
pub(crate) fn admitted(left_ms: f64, len_ms: f64, permille: u64) -> f64 {
    let start = (permille as f64 / 1000.0).clamp(0.0, 1.0);
    if len_ms <= 0.0 || left_ms <= 0.0 {
        return 1.0;
    }
    let done = (1.0 - left_ms / len_ms).clamp(0.0, 1.0);
    start + (1.0 - start) * done
}

/// The words the snapshot keeps of a ramp: its length (ms) and start (per mille) in one u64.
pub(crate) fn pack(len_ms: u64, permille: u64) -> u64 {
    (len_ms.min(u64::MAX >> 10) << 10) | permille.min(1000)
}

/// Whether a call is admitted with `left_ns` of a ramp `packed` by [`pack`] to go: `Ok`, or the
/// fraction admitted now when this call is held back. One uniform draw per call.
#[inline]
pub(crate) fn draw(left_ns: u64, packed: u64) -> Result<(), f64> {
    let fraction = admitted(left_ns as f64 / 1e6, (packed >> 10) as f64, packed & 1023);
    if fraction >= 1.0 || unit() < fraction { Ok(()) } else { Err(fraction) }
}

/// A uniform draw in [0, 1), from a SplitMix64 sequence per thread whose start `rand`'s
/// OS-seeded generator draws once. The draws of a ramp decide which calls go and how long a
/// held-back one waits: they need to be uniform and to differ between threads and processes (a
/// forked child goes on with its parent's sequence, as `rand`'s thread generator does), not to
/// be unpredictable, and they are on the hot path while a ramp runs (`rand::random`,
/// which reaches the thread's ChaCha generator through a reference count, cost that path a
/// few nanoseconds a draw).
pub(crate) fn unit() -> f64 {
    thread_local! {
        // 0: not seeded yet (a const initializer: no lazy-initialization check per access).
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let mut z = STATE.with(|s| {
        let mut state = s.get();
        if state == 0 {
            state = rand::random::<u64>() | 1;
        }
        let next = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        next
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits: every double in [0, 1) that is a multiple of 2^-53.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fraction_rises_linearly_from_the_start_to_all() {
        assert_eq!(admitted(10_000.0, 10_000.0, 100), 0.1);
        assert!((admitted(5_000.0, 10_000.0, 100) - 0.55).abs() < 1e-12);
        assert_eq!(admitted(0.0, 10_000.0, 100), 1.0);
        assert_eq!(admitted(20_000.0, 10_000.0, 250), 0.25, "never below the start");
        assert_eq!(admitted(1.0, 0.0, 100), 1.0, "a ramp of no length admits all");
        let r = Ramp::new(Duration::from_secs(3), Duration::from_secs(10), 100);
        assert!((r.admitted() - 0.73).abs() < 1e-9, "{}", r.admitted());
    }

    #[test]
    fn the_unit_draw_is_uniform_in_zero_to_one_and_differs_between_threads() {
        let draws: Vec<f64> = (0..100_000).map(|_| unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        // Ten bins of 10,000 expected each: 5 standard deviations are about 475.
        let mut bins = [0u32; 10];
        for d in &draws {
            bins[(d * 10.0) as usize] += 1;
        }
        assert!(bins.iter().all(|b| b.abs_diff(10_000) < 475), "{bins:?}");
        let other: Vec<f64> = std::thread::spawn(|| (0..4).map(|_| unit()).collect()).join().unwrap();
        let here: Vec<f64> = (0..4).map(|_| unit()).collect();
        assert_ne!(other, here, "each thread starts its sequence from its own seed");
    }

    #[test]
    fn the_draw_admits_about_the_fraction() {
        let packed = pack(10_000, 100);
        assert_eq!((packed >> 10, packed & 1023), (10_000, 100));
        let admitted = (0..100_000).filter(|_| draw(5_000_000_000, packed).is_ok()).count();
        // 0.55 of 100,000 draws: 5 standard deviations are about 790.
        assert!((54_200..=55_800).contains(&admitted), "{admitted}");
        assert_eq!(draw(10_000_000_000, pack(10_000, 1000)), Ok(()), "a start of 1 admits all");
        let held = (0..1000).filter(|_| draw(10_000_000_000, pack(10_000, 1)).is_err()).count();
        assert!(held >= 990, "a start of 1 per mille holds back nearly every call: {held}");
    }

    #[test]
    fn a_held_back_call_waits_half_to_all_of_a_second_or_of_the_ramp_left() {
        let pause = |left: Duration| crate::error::Rejected::ramp(0.5, left).retry_after().expect("a pause");
        let (mut shortest, mut longest) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let p = pause(Duration::from_secs(3600));
            (shortest, longest) = (shortest.min(p), longest.max(p));
        }
        assert!(
            shortest >= Duration::from_millis(500) && longest <= Duration::from_secs(1),
            "{shortest:?}..{longest:?}"
        );
        assert!(shortest < Duration::from_millis(510) && longest > Duration::from_millis(990), "spread over the range");
        for _ in 0..1000 {
            let p = pause(Duration::from_millis(100));
            assert!(p >= Duration::from_millis(50) && p <= Duration::from_millis(100), "{p:?}");
        }
        assert_eq!(pause(Duration::ZERO), Duration::ZERO);
    }
}

use alloc::vec::Vec;

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn assert_jittered(delay: Duration, nominal: Duration) {
    assert!(
        delay >= nominal / 2 && delay <= nominal,
        "{delay:?} outside [{:?}, {nominal:?}]",
        nominal / 2
    );
}

#[test]
fn doubles_from_5s_to_a_300s_cap_with_equal_jitter() {
    for seed in 0..200 {
        let mut backoff = Backoff::new(DEFAULT_BASE, DEFAULT_CAP, seed);
        for nominal in [5, 10, 20, 40, 80, 160, 300, 300, 300] {
            assert_eq!(backoff.nominal(), secs(nominal));
            assert_jittered(backoff.next_delay(), secs(nominal));
        }
    }
}

#[test]
fn jitter_actually_spreads_the_delays() {
    let firsts: Vec<Duration> = (0..50)
        .map(|seed| Backoff::new(DEFAULT_BASE, DEFAULT_CAP, seed).next_delay())
        .collect();
    let min = firsts.iter().min().unwrap();
    let max = firsts.iter().max().unwrap();
    assert!(*max - *min > Duration::from_secs(1), "{min:?}..{max:?}");
}

#[test]
fn same_seed_gives_the_same_sequence() {
    let run = |seed| {
        let mut b = Backoff::new(DEFAULT_BASE, DEFAULT_CAP, seed);
        (0..12).map(|_| b.next_delay()).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn resets_after_a_connection_of_61s_but_not_59s() {
    let mut backoff = Backoff::new(DEFAULT_BASE, DEFAULT_CAP, 7);
    for _ in 0..4 {
        backoff.next_delay();
    }
    assert_eq!(backoff.nominal(), secs(80));
    backoff.connection_ended(secs(59));
    assert_eq!(backoff.nominal(), secs(80));
    backoff.connection_ended(RESET_AFTER);
    assert_eq!(backoff.nominal(), secs(80));
    backoff.connection_ended(secs(61));
    assert_eq!(backoff.nominal(), secs(5));
    assert_jittered(backoff.next_delay(), secs(5));
}

#[test]
fn reset_returns_to_the_base() {
    let mut backoff = Backoff::new(secs(1), secs(60), 1);
    backoff.next_delay();
    backoff.next_delay();
    backoff.reset();
    assert_eq!(backoff.nominal(), secs(1));
}

#[test]
fn zero_base_is_raised_to_the_minimum() {
    let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO, 3);
    for _ in 0..5 {
        let delay = backoff.next_delay();
        assert_jittered(delay, MIN_DELAY);
    }
}

#[test]
fn cap_below_base_wins() {
    let mut backoff = Backoff::new(secs(60), secs(10), 3);
    for _ in 0..5 {
        assert_jittered(backoff.next_delay(), secs(10));
    }
}

#[test]
fn huge_durations_do_not_overflow() {
    let mut backoff = Backoff::new(Duration::MAX, Duration::MAX, u64::MAX);
    for _ in 0..3 {
        assert_jittered(backoff.next_delay(), Duration::MAX);
    }
    let mut backoff = Backoff::new(secs(1), Duration::MAX, 9);
    for _ in 0..200 {
        backoff.next_delay();
    }
    assert_eq!(backoff.nominal(), Duration::MAX);
}

#[test]
fn default_uses_the_reference_values() {
    assert_eq!(Backoff::default().nominal(), DEFAULT_BASE);
}

//! Deadlines from durations users choose: `Instant::now() + d` panics for
//! a duration too large to add (`Duration::MAX`), so every deadline taken
//! from a setting goes through [`deadline_in`].

use std::time::{Duration, Instant};

/// About a century: "never", as far as a deadline is concerned.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` from now, or a century from now when `d` is longer than that.
pub(crate) fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_a_far_deadline() {
        let far = deadline_in(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        let soon = deadline_in(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }
}

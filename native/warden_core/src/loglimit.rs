//! Rate limit for log lines that a client can cause at will (the audit line
//! of each refusal): at most `per_second` lines pass in each one-second
//! window, the rest are counted, and once the window is over the count is
//! reported once ("N refusals not logged in the last second").
//!
//! Pure logic: the caller passes the current second (any monotonic clock),
//! so it is tested without time passing.

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Log this event.
    pub pass: bool,
    /// Events suppressed in the window that just ended: log one summary
    /// line *before* this event.
    pub summary: Option<u64>,
}

#[derive(Debug)]
pub struct WindowLimiter {
    per_second: u64,
    window: u64,
    passed: u64,
    suppressed: u64,
}

impl WindowLimiter {
    pub const fn new(per_second: u64) -> Self {
        WindowLimiter { per_second, window: 0, passed: 0, suppressed: 0 }
    }

    /// One event at second `now`.
    pub fn admit(&mut self, now: u64) -> Admit {
        let summary = self.roll(now);
        let pass = self.passed < self.per_second;
        if pass {
            self.passed += 1;
        } else {
            self.suppressed += 1;
        }
        Admit { pass, summary }
    }

    /// Closes the window if second `now` is past it; returns how many events
    /// it suppressed (if any). Called with each event and on each drain, so
    /// the summary appears even when the storm stops.
    pub fn roll(&mut self, now: u64) -> Option<u64> {
        if now <= self.window {
            return None;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        self.window = now;
        self.passed = 0;
        (suppressed > 0).then_some(suppressed)
    }

    /// Suppressed so far in the current window.
    pub fn pending(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_up_to_the_limit_then_counts() {
        let mut l = WindowLimiter::new(3);
        let r: Vec<Admit> = (0..5).map(|_| l.admit(10)).collect();
        assert_eq!(r.iter().filter(|a| a.pass).count(), 3);
        assert!(r.iter().all(|a| a.summary.is_none()));
        assert!(!r[3].pass && !r[4].pass);
        assert_eq!(l.pending(), 2);
    }

    #[test]
    fn summary_once_when_the_next_window_starts() {
        let mut l = WindowLimiter::new(2);
        for _ in 0..10 {
            l.admit(5);
        }
        let a = l.admit(6);
        assert_eq!(a, Admit { pass: true, summary: Some(8) });
        assert_eq!(l.admit(6), Admit { pass: true, summary: None });
        assert_eq!(l.admit(6), Admit { pass: false, summary: None });
        // reported by a drain once the storm is over, exactly once
        assert_eq!(l.roll(6), None);
        assert_eq!(l.roll(9), Some(1));
        assert_eq!(l.roll(9), None);
        assert_eq!(l.roll(12), None);
    }

    #[test]
    fn quiet_windows_report_nothing_and_clock_going_back_is_same_window() {
        let mut l = WindowLimiter::new(1);
        assert!(l.admit(1).pass);
        assert!(!l.admit(0).pass); // an older second counts in the current window
        assert_eq!(l.admit(2).summary, Some(1));
        assert_eq!(l.admit(3).summary, None);
    }

    #[test]
    fn storm_is_bounded_per_window() {
        let mut l = WindowLimiter::new(50);
        let mut passed = 0;
        let mut summaries = Vec::new();
        for i in 0..2000u64 {
            let a = l.admit(100 + i / 1000);
            passed += a.pass as u64;
            summaries.extend(a.summary);
        }
        summaries.extend(l.roll(200));
        assert_eq!(passed, 100);
        assert_eq!(summaries, vec![950, 950]);
    }

    #[test]
    fn zero_limit_suppresses_everything() {
        let mut l = WindowLimiter::new(0);
        assert!(!l.admit(1).pass);
        assert_eq!(l.roll(2), Some(1));
    }
}

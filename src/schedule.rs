//! When a job runs next: `interval` (N after the last run ended), `cron` (standard five fields,
//! local time, through croner), and the reconcile schedule of `watch` jobs. Pure functions of
//! the job, the last run and now.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::job::{Job, Trigger};

/// The next time the job's scheduled run (or, for `watch`, its reconcile) is due, or `None`
/// for `manual` jobs. `last` is when the last run ended; without one the job is due now.
pub fn next_due(job: &Job, last: Option<SystemTime>, now: SystemTime) -> Option<SystemTime> {
    match job.trigger {
        Trigger::Manual => None,
        Trigger::Interval | Trigger::Cron | Trigger::Watch => {
            if let Some(expr) = &job.cron {
                // Cron: the first match after the last run (or now, if it never ran: the
                // agent's start-up reconcile covers the past).
                let from = last.unwrap_or(now);
                next_cron(expr, from)
            } else {
                let iv = job.interval.unwrap_or(Duration::from_secs(3600));
                Some(match last {
                    Some(t) => t + iv,
                    None => now,
                })
            }
        }
    }
}

/// The first time strictly after `after` that matches the 5-field cron expression, in local
/// time.
pub fn next_cron(expr: &str, after: SystemTime) -> Option<SystemTime> {
    let cron = croner::Cron::from_str(expr).ok()?;
    let after: chrono::DateTime<chrono::Local> = after.into();
    let next = cron.find_next_occurrence(&after, false).ok()?;
    Some(next.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_next_is_after_and_matches() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let n = next_cron("*/15 * * * *", t0).unwrap();
        assert!(n > t0);
        assert!(n.duration_since(t0).unwrap() <= Duration::from_secs(15 * 60));
        let secs = n.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs % 60, 0);
        assert_eq!((secs / 60) % 15, 0);
        // Daily at 02:00 local: a day apart.
        let a = next_cron("0 2 * * *", t0).unwrap();
        let b = next_cron("0 2 * * *", a).unwrap();
        let gap = b.duration_since(a).unwrap().as_secs();
        assert!((82_800..=90_000).contains(&gap), "{gap}");
        assert!(next_cron("not cron", t0).is_none());
    }
}

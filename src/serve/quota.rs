//! The CPU-seconds-per-minute quota of a tenant (`cpu_seconds_per_minute`
//! in the tokens file).
//!
//! What is counted is the wall time of the tenant's guest work: from the
//! moment a run, a session start or a call has its turn to the moment it
//! ends (a session restored for a call included). A guest that sleeps
//! spends its quota as one that computes: wall time is what holds one of
//! the server's `--max-concurrent` places, and what a guest cannot hide.
//!
//! Each tenant has a bucket holding at most one minute's worth, refilled
//! continuously at `cpu_seconds_per_minute / 60` per second (a sliding
//! window without the memory of one). A request is admitted while the
//! bucket is above zero; its time is taken from it when its work ends, so
//! one request can leave the bucket below zero (by at most its own time
//! limit), and the tenant then waits until the debt is refilled: `429`
//! `QuotaExceeded` with `Retry-After` saying when.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::Tenant;

/// The quota's name, as the tokens file and errors say it.
pub const NAME: &str = "cpu_seconds_per_minute";

struct Bucket {
    /// Seconds left; negative: owed.
    level: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, per_minute: f64, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * per_minute / 60.0;
        self.level = (self.level + gained).min(per_minute);
        self.at = now;
    }
}

/// The buckets of the tenants that have the quota.
#[derive(Default)]
pub(crate) struct Quotas {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Quotas {
    /// `Err(seconds until there is time again)` when `tenant`'s quota is
    /// used up.
    pub fn check(&self, tenant: &Tenant, now: Instant) -> Result<(), u64> {
        let Some(per_minute) = tenant.cpu_seconds_per_minute else {
            return Ok(());
        };
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = map.get_mut(&tenant.name) else {
            return Ok(());
        };
        b.refill(per_minute, now);
        if b.level > 0.0 {
            return Ok(());
        }
        // Until the level is above zero again.
        let wait = (-b.level * 60.0 / per_minute).ceil() + 1.0;
        Err(if wait.is_finite() && wait < 86_400.0 {
            wait as u64
        } else {
            86_400
        })
    }

    /// Takes `used` from `tenant`'s bucket.
    pub fn charge(&self, tenant: &Tenant, used: Duration, now: Instant) {
        let Some(per_minute) = tenant.cpu_seconds_per_minute else {
            return;
        };
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(tenant.name.clone()).or_insert(Bucket {
            level: per_minute,
            at: now,
        });
        b.refill(per_minute, now);
        b.level -= used.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_up_quota_refills_over_the_minute() {
        let mut t = super::super::auth::anonymous();
        t.cpu_seconds_per_minute = Some(6.0);
        let q = Quotas::default();
        let t0 = Instant::now();
        assert_eq!(q.check(&t, t0), Ok(()));
        q.charge(&t, Duration::from_secs(5), t0);
        assert_eq!(q.check(&t, t0), Ok(()));
        q.charge(&t, Duration::from_secs(3), t0);
        // 2 s owed, refilled at 0.1 s per second: 20 s, and a second more
        // to be above zero.
        assert_eq!(q.check(&t, t0), Err(21));
        assert_eq!(q.check(&t, t0 + Duration::from_secs(10)), Err(11));
        assert_eq!(q.check(&t, t0 + Duration::from_secs(21)), Ok(()));
        // Never more than a minute's worth.
        q.charge(&t, Duration::ZERO, t0 + Duration::from_secs(3600));
        q.charge(&t, Duration::from_secs(6), t0 + Duration::from_secs(3600));
        assert!(q.check(&t, t0 + Duration::from_secs(3600)).is_err());
        // Tenants without the quota are never refused.
        let free = super::super::auth::anonymous();
        q.charge(&free, Duration::from_secs(1000), t0);
        assert_eq!(q.check(&free, t0), Ok(()));
    }
}

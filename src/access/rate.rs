//! Request budgets: a token bucket per connection (CLIENT_RATE_*, or SERVICE_RATE_* for
//! connections that publish) and one per caller of the HTTP publish API (API_RATE_*), on
//! `governor`'s GCRA (a token bucket without a refill task).
//!
//! A request over budget is not executed: the session answers `rate_limited` with
//! `retry_after_ms`, the API 429 with `Retry-After`. A connection refused more than
//! CLIENT_RATE_CLOSE_AFTER times in a row is closed with 3509: a client that ignores the answer
//! is a runaway or an attacker, and each refusal still costs a parse and a reply.

use std::{num::NonZeroU32, time::Duration};

use governor::{clock::Clock, DefaultDirectRateLimiter, Quota, RateLimiter};

/// A sustained rate and a burst, or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    quota: Option<Quota>,
}

impl Rate {
    /// `per_second` requests a second with bursts of `burst` (at least 1); 0 per second: no limit.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_second)
            .map(|rate| Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)));
        Rate { quota }
    }

    pub(crate) const UNLIMITED: Rate = Rate { quota: None };
}

/// How connections' budgets are set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientRates {
    /// Browsers and agents.
    pub client: Rate,
    /// Connections that carry a publish key or the `publish` scope: services, whose rate is
    /// their job (the benchmarks' WebSocket publishers among them).
    pub service: Rate,
    /// Refusals in a row after which the connection is closed with 3509 (0: never).
    pub close_after: u32,
}

impl Default for ClientRates {
    fn default() -> Self {
        ClientRates { client: Rate::UNLIMITED, service: Rate::UNLIMITED, close_after: 0 }
    }
}

/// What the budget says of one more request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spend {
    Allowed,
    /// Not executed; the request would be allowed after this long.
    Refused {
        retry_after: Duration,
    },
    /// Refused, and the connection has now been refused more than `close_after` times in a row.
    CloseConnection,
}

/// One connection's budget.
pub(crate) struct RequestBudget {
    limiter: Option<DefaultDirectRateLimiter>,
    /// Whether it is a service's budget (it changes class at most once, when a token arrives).
    service: bool,
    refused_in_a_row: u32,
    close_after: u32,
}

impl RequestBudget {
    pub(crate) fn new(rates: &ClientRates, service: bool) -> Self {
        let rate = if service { rates.service } else { rates.client };
        RequestBudget {
            limiter: rate.quota.map(RateLimiter::direct),
            service,
            refused_in_a_row: 0,
            close_after: rates.close_after,
        }
    }

    pub(crate) fn is_service(&self) -> bool {
        self.service
    }

    /// Spends one request of the budget.
    pub(crate) fn spend(&mut self) -> Spend {
        let Some(limiter) = &self.limiter else { return Spend::Allowed };
        match limiter.check() {
            Ok(()) => {
                self.refused_in_a_row = 0;
                Spend::Allowed
            }
            Err(not_until) => {
                self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
                if self.close_after > 0 && self.refused_in_a_row > self.close_after {
                    return Spend::CloseConnection;
                }
                Spend::Refused { retry_after: not_until.wait_time_from(limiter.clock().now()) }
            }
        }
    }
}

/// Budgets of the HTTP publish API, one per API key or user. Idle callers are forgotten by
/// [`ApiBudgets::forget_idle`], so the map holds only callers seen within a bucket's refill.
pub(crate) struct ApiBudgets {
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl ApiBudgets {
    pub(crate) fn new(rate: Rate) -> Self {
        ApiBudgets { limiter: rate.quota.map(RateLimiter::keyed) }
    }

    /// Spends one request of `caller`'s budget: None when allowed, else how long to wait.
    pub(crate) fn spend(&self, caller: &str) -> Option<Duration> {
        let limiter = self.limiter.as_ref()?;
        let refused = limiter.check_key(&caller.to_owned()).err()?;
        Some(refused.wait_time_from(limiter.clock().now()))
    }

    /// Drops the buckets that are full again (their callers were idle long enough).
    pub(crate) fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Callers with a bucket in memory.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_then_the_close() {
        let rates = ClientRates { client: Rate::new(1, 3), service: Rate::UNLIMITED, close_after: 2 };
        let mut budget = RequestBudget::new(&rates, false);
        for _ in 0..3 {
            assert_eq!(budget.spend(), Spend::Allowed);
        }
        let Spend::Refused { retry_after } = budget.spend() else { panic!("the fourth must be refused") };
        assert!(retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1), "{retry_after:?}");
        assert!(matches!(budget.spend(), Spend::Refused { .. }));
        assert_eq!(budget.spend(), Spend::CloseConnection);
        let mut service = RequestBudget::new(&rates, true);
        assert!((0..10_000).all(|_| service.spend() == Spend::Allowed));
    }

    #[test]
    fn api_budgets_are_per_caller() {
        let budgets = ApiBudgets::new(Rate::new(1, 2));
        assert_eq!(budgets.spend("key#0"), None);
        assert_eq!(budgets.spend("key#0"), None);
        assert!(budgets.spend("key#0").is_some());
        assert_eq!(budgets.spend("user:alice"), None);
        assert_eq!(budgets.tracked(), 2);
        assert_eq!(ApiBudgets::new(Rate::UNLIMITED).spend("anyone"), None);
    }

    #[test]
    fn with_close_after_zero_refusals_never_close_the_connection() {
        let rates = ClientRates { client: Rate::new(1, 1), service: Rate::UNLIMITED, close_after: 0 };
        let mut budget = RequestBudget::new(&rates, false);
        assert_eq!(budget.spend(), Spend::Allowed);
        assert!((0..10).all(|_| matches!(budget.spend(), Spend::Refused { .. })));
    }

    #[test]
    fn a_budget_knows_whether_it_is_a_services() {
        let rates = ClientRates::default();
        assert!(RequestBudget::new(&rates, true).is_service());
        assert!(!RequestBudget::new(&rates, false).is_service());
    }

    #[test]
    fn idle_api_callers_are_forgotten_once_their_bucket_is_full_again() {
        let budgets = ApiBudgets::new(Rate::new(1000, 1));
        assert_eq!(budgets.spend("key#0"), None);
        assert_eq!(budgets.tracked(), 1);
        // One request refills in a millisecond at 1000 a second.
        std::thread::sleep(Duration::from_millis(20));
        budgets.forget_idle();
        assert_eq!(budgets.tracked(), 0);
    }
}

//! Abuse limits: request rates per client IP and per account on the auth,
//! booking and hold endpoints, and lock-outs after repeated failed logins.
//!
//! Rates use GCRA token buckets from `governor` (one keyed limiter per
//! bucket). Everything is in memory and per node: a cluster of N nodes
//! behind a load balancer allows up to N times the configured rates, which
//! is acceptable for abuse protection (the limits are about orders of
//! magnitude, not exact counts) and keeps Redis off the request path.
//!
//! Memory stays bounded: a background task drops the state of keys that
//! are back to a fresh bucket (`retain_recent`) and expired failure
//! counters, and account-keyed state is only ever created after the per-IP
//! check passed, so one client cannot create keys faster than its IP rate.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use serde::Deserialize;

use crate::{auth::TokenKeys, error::ApiError};

/// `[rate_limit]`: see `config/base.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    /// Off: no rate limits and no login lock-outs (load tests).
    pub enabled: bool,
    /// Proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` is
    /// believed.
    pub trusted_proxies: Vec<String>,
    /// Register, token and logout requests per client IP.
    pub auth_per_ip: RateSettings,
    /// Password logins per account (user name).
    pub auth_per_account: RateSettings,
    /// Booking and hold changes per client IP.
    pub booking_per_ip: RateSettings,
    /// Booking and hold changes per signed-in account.
    pub booking_per_account: RateSettings,
    /// Failed-login lock-out.
    pub login_failures: LoginFailureSettings,
    /// How often idle limiter state is dropped, in seconds.
    pub cleanup_interval_secs: u64,
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct RateSettings {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

/// `[rate_limit.login_failures]`
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LoginFailureSettings {
    /// Failed logins for one account within the window before it is locked.
    pub max_per_account: u32,
    /// Failed logins from one IP within the window before it is locked.
    pub max_per_ip: u32,
    /// The window failures are counted in, in seconds.
    pub window_secs: u64,
    /// How long a lock-out lasts, in seconds.
    pub lockout_secs: u64,
}

/// Why a setting was refused.
#[derive(Debug, thiserror::Error)]
#[error("rate_limit.{0}")]
pub struct RateLimitConfigError(String);

impl RateSettings {
    fn quota(&self, name: &str) -> Result<Quota, RateLimitConfigError> {
        let burst = NonZeroU32::new(self.burst)
            .ok_or_else(|| RateLimitConfigError(format!("{name}.burst must be at least 1")))?;
        if self.per_minute == 0 {
            return Err(RateLimitConfigError(format!(
                "{name}.per_minute must be at least 1"
            )));
        }
        // One cell every 60/per_minute seconds (in nanoseconds, so rates
        // above one per millisecond still work).
        let period = Duration::from_nanos((60_000_000_000u64 / u64::from(self.per_minute)).max(1));
        Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| RateLimitConfigError(format!("{name}.per_minute is out of range")))
    }
}

/// A trusted proxy address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let ip = s.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { net: ip, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The rate-limit key of a client address. One IPv6 host usually owns a
/// whole /64, so IPv6 clients are limited per /64: otherwise a single
/// machine could rotate through 2^64 addresses to escape its limit.
fn ip_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

/// Failed-login counters for one kind of key.
struct FailureCounter {
    max: u32,
    window: Duration,
    lockout: Duration,
    /// Most keys tracked; beyond it new keys are not counted until a
    /// cleanup frees room (the per-IP rate still applies to them).
    capacity: usize,
    entries: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl FailureCounter {
    fn new(max: u32, window: Duration, lockout: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            lockout,
            capacity: 100_000,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        // A panic while holding this lock cannot leave the map in a broken
        // state (every update is a single insert or remove): keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `key` is still locked out, if it is.
    fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        let until = self.lock().get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn fail(&self, key: &str, now: Instant) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(key) {
            // Full (an attacker spraying user names can get here): make room
            // rather than stop counting, or filling the map would switch
            // lock-outs off. Stale entries go first, then the unlocked entry
            // with the fewest failures; locked entries are kept, so flooding
            // cannot unlock a victim.
            self.evict(&mut map, now);
            if map.len() >= self.capacity {
                return;
            }
        }
        let e = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(e.first) > self.window
            || e.locked_until.is_some_and(|until| until <= now)
        {
            *e = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        e.count += 1;
        if e.count >= self.max {
            e.locked_until = Some(now + self.lockout);
        }
    }

    fn evict(&self, map: &mut HashMap<String, Failures>, now: Instant) {
        map.retain(|_, e| self.current(e, now));
        if map.len() < self.capacity {
            return;
        }
        let victim = map
            .iter()
            .filter(|(_, e)| e.locked_until.is_none_or(|until| until <= now))
            .min_by_key(|(_, e)| (e.count, e.first))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            map.remove(&k);
        }
    }

    /// Whether an entry still matters: its window is open or it is locked.
    fn current(&self, e: &Failures, now: Instant) -> bool {
        let window_open = now.duration_since(e.first) <= self.window;
        let locked = e.locked_until.is_some_and(|until| until > now);
        window_open || locked
    }

    fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    fn cleanup(&self, now: Instant) {
        self.lock().retain(|_, e| self.current(e, now));
    }
}

/// Every limiter of one server.
pub struct RateLimits {
    enabled: bool,
    trusted: Vec<Cidr>,
    auth_ip: DefaultKeyedRateLimiter<IpAddr>,
    auth_account: DefaultKeyedRateLimiter<String>,
    booking_ip: DefaultKeyedRateLimiter<IpAddr>,
    booking_account: DefaultKeyedRateLimiter<uuid::Uuid>,
    failed_by_account: FailureCounter,
    failed_by_ip: FailureCounter,
    cleanup_interval: Duration,
}

/// A request refused for its rate: answer 429 with `Retry-After`.
fn too_many(code: &'static str, detail: &str, wait: Duration) -> ApiError {
    // Whole seconds, rounded up: a client that waits exactly that long
    // gets through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::too_many_requests(code, detail, secs.max(1))
}

impl RateLimits {
    /// From settings.
    pub fn from_settings(s: &RateLimitSettings) -> Result<Self, RateLimitConfigError> {
        let trusted = s
            .trusted_proxies
            .iter()
            .map(|p| {
                Cidr::parse(p).ok_or_else(|| {
                    RateLimitConfigError(format!(
                        "trusted_proxies: {p:?} is not an IP address or CIDR block"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let f = &s.login_failures;
        let window = Duration::from_secs(f.window_secs.max(1));
        let lockout = Duration::from_secs(f.lockout_secs.max(1));
        Ok(Self {
            enabled: s.enabled,
            trusted,
            auth_ip: RateLimiter::keyed(s.auth_per_ip.quota("auth_per_ip")?),
            auth_account: RateLimiter::keyed(s.auth_per_account.quota("auth_per_account")?),
            booking_ip: RateLimiter::keyed(s.booking_per_ip.quota("booking_per_ip")?),
            booking_account: RateLimiter::keyed(
                s.booking_per_account.quota("booking_per_account")?,
            ),
            failed_by_account: FailureCounter::new(f.max_per_account, window, lockout),
            failed_by_ip: FailureCounter::new(f.max_per_ip, window, lockout),
            cleanup_interval: Duration::from_secs(s.cleanup_interval_secs.max(1)),
        })
    }

    /// Drops idle state every `cleanup_interval_secs` while the server runs.
    pub fn spawn_cleanup(self: &Arc<Self>) {
        if !self.enabled {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = self.cleanup_interval;
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limits) = weak.upgrade() else { return };
                limits.cleanup();
            }
        });
    }

    /// Forgets keys whose buckets are full again and expired failures.
    pub fn cleanup(&self) {
        self.auth_ip.retain_recent();
        self.auth_account.retain_recent();
        self.booking_ip.retain_recent();
        self.booking_account.retain_recent();
        for l in [&self.auth_ip, &self.booking_ip] {
            l.shrink_to_fit();
        }
        self.auth_account.shrink_to_fit();
        self.booking_account.shrink_to_fit();
        let now = Instant::now();
        self.failed_by_account.cleanup(now);
        self.failed_by_ip.cleanup(now);
    }

    /// Keys tracked across all limiters (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.auth_ip.len()
            + self.auth_account.len()
            + self.booking_ip.len()
            + self.booking_account.len()
            + self.failed_by_account.lock().len()
            + self.failed_by_ip.lock().len()
    }

    /// The client address of a request: the peer, or — when the peer is a
    /// trusted proxy — the nearest untrusted address in
    /// `X-Forwarded-For` (walking from the right, since only the entries
    /// our own proxies appended can be believed; the left end is whatever
    /// the client chose to send).
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = canonical(peer?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let Some(xff) = forwarded_for else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in xff.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Garbage in the chain: stop at the last address we trust.
                break;
            };
            client = canonical(ip);
            if !self.is_trusted(client) {
                break;
            }
        }
        Some(client)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request ([`Self::client_ip`] over the peer
    /// and every `X-Forwarded-For` line); the audit log records this too.
    pub fn request_ip(&self, req: &actix_web::HttpRequest) -> Option<IpAddr> {
        // Every header line, in order, joined as one list: a proxy may
        // append its own line instead of extending the client's, and the
        // first line is then whatever the client forged. A line that is not
        // text stands in as garbage, which stops the walk there.
        let lines: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        let xff = (!lines.is_empty()).then(|| lines.join(","));
        self.client_ip(req.peer_addr().map(|a| a.ip()), xff.as_deref())
    }

    fn check<K: Clone + std::hash::Hash + Eq>(
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        detail: &str,
    ) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            too_many(
                "rate_limited",
                detail,
                not_until.wait_time_from(limiter.clock().now()),
            )
        })
    }

    /// Per-IP limit of the auth endpoints.
    pub fn check_auth_ip(&self, req: &actix_web::HttpRequest) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        match self.request_ip(req) {
            Some(ip) => Self::check(
                &self.auth_ip,
                &ip_key(ip),
                "too many sign-in requests from this address; retry later",
            ),
            None => Ok(()),
        }
    }

    /// Before checking a password: the per-account login rate, and the
    /// lock-outs after repeated failures (for the account and the IP).
    /// Refused attempts get 429 whether or not the password would have been
    /// right, and the same for existing and unknown accounts, so the answer
    /// reveals nothing about either.
    pub fn before_login(
        &self,
        req: &actix_web::HttpRequest,
        username: &str,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let account = account_key(username);
        let now = Instant::now();
        let ip = self.request_ip(req).map(|ip| ip_key(ip).to_string());
        let locked = [
            self.failed_by_account.locked(&account, now),
            ip.as_deref()
                .and_then(|ip| self.failed_by_ip.locked(ip, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = locked {
            return Err(too_many(
                "too_many_failed_logins",
                "too many failed sign-in attempts; retry later",
                wait,
            ));
        }
        Self::check(
            &self.auth_account,
            &account,
            "too many sign-in attempts for this account; retry later",
        )
    }

    /// After a wrong user name or password.
    pub fn login_failed(&self, req: &actix_web::HttpRequest, username: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        self.failed_by_account.fail(&account_key(username), now);
        if let Some(ip) = self.request_ip(req) {
            self.failed_by_ip.fail(&ip_key(ip).to_string(), now);
        }
    }

    /// After a successful login: the account's failures are forgiven. The
    /// IP's are not: otherwise an attacker could sign in to an account of
    /// their own between guesses to keep their address unlocked.
    pub fn login_succeeded(&self, username: &str) {
        if self.enabled {
            self.failed_by_account.reset(&account_key(username));
        }
    }

    /// Per-IP and per-account limits of booking and hold changes.
    fn check_booking(&self, req: &actix_web::HttpRequest) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(ip) = self.request_ip(req) {
            Self::check(
                &self.booking_ip,
                &ip_key(ip),
                "too many booking requests from this address; retry later",
            )?;
        }
        // The account is the token's subject. A missing or bad token is the
        // handler's to refuse (401); it is limited per IP only.
        let account = req
            .app_data::<web::Data<Arc<TokenKeys>>>()
            .and_then(|keys| keys.verify(bearer(req)?).ok())
            .map(|claims| claims.sub.0);
        if let Some(id) = account {
            Self::check(
                &self.booking_account,
                &id,
                "too many booking requests for this account; retry later",
            )?;
        }
        Ok(())
    }
}

fn bearer(req: &actix_web::HttpRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// Accounts are keyed by the user name as typed, trimmed and lower-cased
/// (e-mails are matched case-insensitively), capped in length so a huge
/// name cannot make a huge key.
fn account_key(username: &str) -> String {
    username.trim().to_lowercase().chars().take(320).collect()
}

/// Route middleware: the per-IP limit of the auth endpoints.
pub async fn limit_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some(limits) = req.app_data::<web::Data<RateLimits>>() {
        limits.check_auth_ip(req.request())?;
    }
    next.call(req).await
}

/// Route middleware: the per-IP and per-account limits of booking and hold
/// changes (reads are not limited here).
pub async fn limit_booking(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && let Some(limits) = req.app_data::<web::Data<RateLimits>>()
    {
        limits.check_booking(req.request())?;
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            enabled: true,
            trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into()],
            auth_per_ip: RateSettings {
                per_minute: 60,
                burst: 3,
            },
            auth_per_account: RateSettings {
                per_minute: 60,
                burst: 2,
            },
            booking_per_ip: RateSettings {
                per_minute: 60,
                burst: 3,
            },
            booking_per_account: RateSettings {
                per_minute: 60,
                burst: 3,
            },
            login_failures: LoginFailureSettings {
                max_per_account: 3,
                max_per_ip: 5,
                window_secs: 60,
                lockout_secs: 60,
            },
            cleanup_interval_secs: 60,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let l = RateLimits::from_settings(&settings()).unwrap();
        // An untrusted peer cannot pick its own address.
        assert_eq!(
            l.client_ip(Some(ip("203.0.113.9")), Some("198.51.100.1")),
            Some(ip("203.0.113.9"))
        );
        // A trusted proxy's header names the client; a client-sent prefix
        // on the left is ignored.
        assert_eq!(
            l.client_ip(
                Some(ip("10.1.2.3")),
                Some("1.1.1.1, 198.51.100.7, 10.9.9.9")
            ),
            Some(ip("198.51.100.7"))
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            l.client_ip(Some(ip("10.1.2.3")), Some("nonsense")),
            Some(ip("10.1.2.3"))
        );
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            l.client_ip(Some(ip("::ffff:10.0.0.1")), Some("192.0.2.4")),
            Some(ip("192.0.2.4"))
        );
        assert_eq!(l.client_ip(None, Some("192.0.2.4")), None);
    }

    #[test]
    fn cidrs_parse_and_match() {
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
        let c = Cidr::parse("192.168.0.0/16").unwrap();
        assert!(c.contains(ip("192.168.44.1")));
        assert!(!c.contains(ip("192.169.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::1"))
        );
        let bad = RateLimitSettings {
            trusted_proxies: vec!["10.0.0.0/40".into()],
            ..settings()
        };
        assert!(RateLimits::from_settings(&bad).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn zero_rates_are_refused() {
        let bad = RateLimitSettings {
            auth_per_ip: RateSettings {
                per_minute: 0,
                burst: 1,
            },
            ..settings()
        };
        assert!(RateLimits::from_settings(&bad).is_err());
        let bad = RateLimitSettings {
            booking_per_account: RateSettings {
                per_minute: 1,
                burst: 0,
            },
            ..settings()
        };
        assert!(RateLimits::from_settings(&bad).is_err());
    }

    #[test]
    fn failures_lock_out_then_expire_and_reset() {
        let c = FailureCounter::new(3, Duration::from_secs(60), Duration::from_secs(30));
        let t0 = Instant::now();
        c.fail("a", t0);
        c.fail("a", t0);
        assert!(c.locked("a", t0).is_none());
        c.fail("a", t0);
        let wait = c.locked("a", t0).unwrap();
        assert_eq!(wait, Duration::from_secs(30));
        assert!(c.locked("b", t0).is_none(), "other keys are unaffected");
        // The lock-out lapses…
        assert!(c.locked("a", t0 + Duration::from_secs(31)).is_none());
        // …and so do failures outside the window.
        c.reset("a");
        c.fail("a", t0);
        c.fail("a", t0);
        c.fail("a", t0 + Duration::from_secs(61));
        assert!(c.locked("a", t0 + Duration::from_secs(61)).is_none());
        c.cleanup(t0 + Duration::from_secs(200));
        assert!(c.lock().is_empty(), "expired counters are dropped");
    }

    #[test]
    fn idle_limiter_state_is_dropped() {
        let l = RateLimits::from_settings(&RateLimitSettings {
            auth_per_account: RateSettings {
                per_minute: 60_000_000,
                burst: 1,
            },
            ..settings()
        })
        .unwrap();
        for i in 0..100 {
            assert!(l.auth_account.check_key(&format!("user{i}")).is_ok());
        }
        assert_eq!(l.tracked_keys(), 100);
        // At a million per second the buckets are full again at once.
        std::thread::sleep(Duration::from_millis(5));
        l.cleanup();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn a_full_failure_map_still_locks_out() {
        let mut c = FailureCounter::new(3, Duration::from_secs(900), Duration::from_secs(900));
        c.capacity = 4;
        let now = Instant::now();
        // The victim is locked; junk keys then fill the map.
        for _ in 0..3 {
            c.fail("victim", now);
        }
        for i in 0..10 {
            c.fail(&format!("junk{i}"), now);
        }
        assert!(
            c.locked("victim", now).is_some(),
            "flooding unlocked the victim"
        );
        // A new target is still counted and locked while the map is full.
        for _ in 0..3 {
            c.fail("target", now);
        }
        assert!(
            c.locked("target", now).is_some(),
            "a full map stopped lock-outs"
        );
        assert!(c.lock().len() <= 4);
    }
}

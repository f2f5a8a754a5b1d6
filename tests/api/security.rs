//! Abuse limits, failed-login lock-outs, signing-key rotation, logout and
//! built-in TLS.

use std::{net::TcpListener, sync::Arc};

use base64::Engine;
use docspot::{config::JwtKey, config::Settings, domain::Role, startup::Application};
use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, expect, spawn_app, spawn_app_with};

fn with(f: impl Fn(&mut Settings) + Send + Sync + 'static) -> Options {
    Options {
        settings: Some(Arc::new(f)),
        ..Default::default()
    }
}

/// The 429 answer: problem+json with the code and a whole-second
/// Retry-After.
async fn expect_throttled(r: Response, code: &str) -> u64 {
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
    let v = expect(r, 429).await;
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], 429);
    retry
}

async fn login_from(app: &TestApp, ip: Option<&str>, user: &str, password: &str) -> Response {
    let mut req = app.client.post(app.url("/api/v1/auth/token")).form(&[
        ("grant_type", "password"),
        ("username", user),
        ("password", password),
    ]);
    if let Some(ip) = ip {
        req = req.header("X-Forwarded-For", ip);
    }
    req.send().await.unwrap()
}

#[actix_web::test]
async fn auth_requests_are_limited_per_ip_with_retry_after() {
    let app = spawn_app_with(with(|s| {
        s.rate_limit.auth_per_ip.burst = 3;
        s.rate_limit.auth_per_ip.per_minute = 1;
    }))
    .await;
    for _ in 0..3 {
        let r = login_from(&app, None, "nobody@example.org", "wrong password").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, None, "nobody@example.org", "wrong password").await;
    let retry = expect_throttled(r, "rate_limited").await;
    assert!(retry <= 60, "one request per minute refills within 60 s");
    // Registration and logout share the budget; other endpoints do not.
    let r = app.register("new@example.org", "long enough pw", "N").await;
    expect_throttled(r, "rate_limited").await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .form(&[("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    expect_throttled(r, "rate_limited").await;
    let r = app
        .client
        .get(app.url("/api/v1/doctors"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[actix_web::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    // Untrusted peer: X-Forwarded-For is ignored, so a client cannot
    // escape its limit by inventing addresses.
    let app = spawn_app_with(with(|s| {
        s.rate_limit.auth_per_ip.burst = 2;
        s.rate_limit.auth_per_ip.per_minute = 1;
    }))
    .await;
    for i in 0..2 {
        let r = login_from(&app, Some(&format!("198.51.100.{i}")), "a@b.org", "x").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, Some("198.51.100.99"), "a@b.org", "x").await;
    expect_throttled(r, "rate_limited").await;

    // Behind a trusted proxy (127.0.0.1 here), each forwarded client has
    // its own budget.
    let app = spawn_app_with(with(|s| {
        s.rate_limit.auth_per_ip.burst = 2;
        s.rate_limit.auth_per_ip.per_minute = 1;
        s.rate_limit.trusted_proxies = vec!["127.0.0.0/8".into()];
    }))
    .await;
    for _ in 0..2 {
        let r = login_from(&app, Some("198.51.100.1"), "a@b.org", "x").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, Some("198.51.100.1"), "a@b.org", "x").await;
    expect_throttled(r, "rate_limited").await;
    // A client-chosen left-most entry does not help: the proxy appended the
    // real address on the right.
    let r = login_from(&app, Some("203.0.113.5, 198.51.100.1"), "a@b.org", "x").await;
    expect_throttled(r, "rate_limited").await;
    let r = login_from(&app, Some("198.51.100.2"), "a@b.org", "x").await;
    assert_eq!(r.status(), 400, "another client is not affected");
}

#[actix_web::test]
async fn a_forged_first_forwarded_for_line_does_not_escape_the_limit() {
    // A proxy that adds its own X-Forwarded-For line (instead of extending
    // the client's) leaves the client's forged line first: all lines count,
    // walked from the right.
    let app = spawn_app_with(with(|s| {
        s.rate_limit.auth_per_ip.burst = 2;
        s.rate_limit.auth_per_ip.per_minute = 1;
        s.rate_limit.trusted_proxies = vec!["127.0.0.0/8".into()];
    }))
    .await;
    let send = |forged: String| {
        app.client
            .post(app.url("/api/v1/auth/token"))
            .header("X-Forwarded-For", forged)
            .header("X-Forwarded-For", "198.51.100.1")
            .form(&[
                ("grant_type", "password"),
                ("username", "a@b.org"),
                ("password", "x"),
            ])
            .send()
    };
    for i in 0..2 {
        let r = send(format!("203.0.113.{i}")).await.unwrap();
        assert_eq!(r.status(), 400);
    }
    let r = send("203.0.113.99".into()).await.unwrap();
    expect_throttled(r, "rate_limited").await;
    // Another real client (proxy line) still has its budget.
    let r = login_from(&app, Some("198.51.100.2"), "a@b.org", "x").await;
    assert_eq!(r.status(), 400);
}

#[actix_web::test]
async fn logins_are_limited_per_account_across_addresses() {
    let app = spawn_app_with(with(|s| {
        s.rate_limit.auth_per_account.burst = 2;
        s.rate_limit.auth_per_account.per_minute = 1;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1".into()];
    }))
    .await;
    let (user, _) = app.patient().await;
    for i in 0..2 {
        let ip = format!("192.0.2.{i}");
        let r = login_from(&app, Some(&ip), &user.email, "password-123").await;
        assert_eq!(r.status(), 200);
    }
    // A third address, the same account (in other letter case): limited.
    let r = login_from(
        &app,
        Some("192.0.2.50"),
        &user.email.to_uppercase(),
        "password-123",
    )
    .await;
    expect_throttled(r, "rate_limited").await;
    // Another account from the same address is fine.
    let (other, _) = app.patient().await;
    let r = login_from(&app, Some("192.0.2.50"), &other.email, "password-123").await;
    assert_eq!(r.status(), 200);
}

#[actix_web::test]
async fn repeated_failed_logins_lock_the_account_without_revealing_it() {
    let app = spawn_app_with(with(|s| {
        s.rate_limit.login_failures.max_per_account = 3;
        s.rate_limit.login_failures.lockout_secs = 600;
    }))
    .await;
    let (user, _) = app.patient().await;

    // Failures below the threshold, then a success: the count starts over.
    for _ in 0..2 {
        let r = login_from(&app, None, &user.email, "wrong password").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, None, &user.email, "password-123").await;
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = login_from(&app, None, &user.email, "wrong password").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, None, &user.email, "password-123").await;
    assert_eq!(r.status(), 200, "the success reset the counter");

    // Three failures in a row lock the account: even the right password
    // is refused now.
    for _ in 0..3 {
        let r = login_from(&app, None, &user.email, "wrong password").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, None, &user.email, "password-123").await;
    let retry = expect_throttled(r, "too_many_failed_logins").await;
    assert!(retry > 500 && retry <= 600, "{retry}");

    // An account that does not exist behaves exactly the same.
    for _ in 0..3 {
        let r = login_from(&app, None, "ghost@example.org", "wrong password").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, None, "ghost@example.org", "wrong password").await;
    expect_throttled(r, "too_many_failed_logins").await;

    // Other accounts still sign in.
    let (other, _) = app.patient().await;
    let r = login_from(&app, None, &other.email, "password-123").await;
    assert_eq!(r.status(), 200);
}

#[actix_web::test]
async fn failed_logins_across_accounts_lock_the_address() {
    let app = spawn_app_with(with(|s| {
        s.rate_limit.login_failures.max_per_ip = 4;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1".into()];
    }))
    .await;
    let (user, _) = app.patient().await;
    for i in 0..4 {
        let r = login_from(&app, Some("192.0.2.7"), &format!("u{i}@example.org"), "x").await;
        assert_eq!(r.status(), 400);
    }
    let r = login_from(&app, Some("192.0.2.7"), &user.email, "password-123").await;
    expect_throttled(r, "too_many_failed_logins").await;
    let r = login_from(&app, Some("192.0.2.8"), &user.email, "password-123").await;
    assert_eq!(r.status(), 200, "the account itself is not locked");
}

#[actix_web::test]
async fn booking_changes_are_limited_per_account_and_per_ip() {
    let app = spawn_app_with(with(|s| {
        s.rate_limit.booking_per_account.burst = 2;
        s.rate_limit.booking_per_account.per_minute = 1;
        s.rate_limit.booking_per_ip.burst = 5;
        s.rate_limit.booking_per_ip.per_minute = 1;
    }))
    .await;
    let (_, a) = app.patient().await;
    let (_, b) = app.patient().await;
    let junk = json!({"doctor_id": "not-a-doctor", "start": "not-a-time"});
    // The limit applies before the handler: invalid requests count too.
    for _ in 0..2 {
        let r = app.post(&a, "/api/v1/holds", junk.clone()).await;
        assert_ne!(r.status(), 429);
    }
    let r = app.post(&a, "/api/v1/appointments", junk.clone()).await;
    expect_throttled(r, "rate_limited").await;
    // Reads are not limited.
    let r = app.get(&a, "/api/v1/appointments").await;
    assert_eq!(r.status(), 200);
    // Another account has its own budget, until the address runs out
    // (5 per address: 3 used by a).
    for _ in 0..2 {
        let r = app.post(&b, "/api/v1/holds", junk.clone()).await;
        assert_ne!(r.status(), 429);
    }
    let r = app.post(&b, "/api/v1/holds", junk.clone()).await;
    expect_throttled(r, "rate_limited").await;
}

#[actix_web::test]
async fn limits_can_be_turned_off() {
    let app = spawn_app_with(with(|s| {
        s.rate_limit.enabled = false;
        s.rate_limit.auth_per_ip.burst = 1;
        s.rate_limit.auth_per_ip.per_minute = 1;
        s.rate_limit.login_failures.max_per_account = 1;
    }))
    .await;
    for _ in 0..5 {
        let r = login_from(&app, None, "x@example.org", "wrong").await;
        assert_eq!(r.status(), 400);
    }
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_string()
}

fn keys(active: &'static str, set: &'static [(&'static str, &'static str)]) -> Options {
    with(move |s| {
        s.auth.jwt_secret = String::new().into();
        s.auth.jwt_keys = set
            .iter()
            .map(|(kid, secret)| JwtKey {
                kid: kid.to_string(),
                secret: secret.to_string().into(),
            })
            .collect();
        s.auth.active_kid = active.into();
    })
}

async fn sign_in(app: &TestApp, email: &str) -> Value {
    let r = login_from(app, None, email, "password-123").await;
    expect(r, 200).await
}

#[actix_web::test]
async fn signing_keys_rotate_without_logging_anyone_out() {
    const OLD: (&str, &str) = ("2026-05", "the old signing secret, long enough");
    const NEW: (&str, &str) = ("2026-11", "the new signing secret, long enough");
    let before = spawn_app_with(keys(OLD.0, &[OLD])).await;
    let (user, _) = before.user(Role::Patient, None, None).await;
    let old_token = sign_in(&before, &user.email).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(kid_of(&old_token), OLD.0);

    // Rotation: the new key signs, the old one still verifies.
    let during = spawn_app_with(Options {
        database: Some(before.database.clone()),
        ..keys(NEW.0, &[NEW, OLD])
    })
    .await;
    let r = during.get(&old_token, "/api/v1/appointments").await;
    expect(r, 200).await;
    let new_token = sign_in(&during, &user.email).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(kid_of(&new_token), NEW.0, "new tokens carry the new kid");
    expect(during.get(&new_token, "/api/v1/appointments").await, 200).await;

    // The old key is removed: its tokens are refused with a clear code.
    let after = spawn_app_with(Options {
        database: Some(before.database.clone()),
        ..keys(NEW.0, &[NEW])
    })
    .await;
    let r = after.get(&old_token, "/api/v1/appointments").await;
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(expect(r, 401).await["code"], "unknown_token_key");
    expect(after.get(&new_token, "/api/v1/appointments").await, 200).await;
}

#[actix_web::test]
async fn tokens_with_a_forged_kid_or_algorithm_are_refused() {
    let app = spawn_app().await;
    let (_, token) = app.patient().await;
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forge = |header: Value| b64.encode(header.to_string());
    parts[0] = forge(json!({"alg": "HS256", "typ": "JWT", "kid": "nope"}));
    let r = app.get(&parts.join("."), "/api/v1/appointments").await;
    assert_eq!(expect(r, 401).await["code"], "unknown_token_key");
    parts[0] = forge(json!({"alg": "none", "typ": "JWT", "kid": "k1"}));
    let r = app.get(&parts.join("."), "/api/v1/appointments").await;
    assert_eq!(expect(r, 401).await["code"], "unauthorized");
}

#[actix_web::test]
async fn a_key_set_that_names_a_missing_active_key_does_not_start() {
    let mut settings = Settings::load().unwrap();
    settings.database_url = format!(
        "sqlite://{}",
        std::env::temp_dir()
            .join(format!("docspot_test_{}.db", uuid::Uuid::new_v4().simple()))
            .display()
    )
    .into();
    settings.demo.seed_on_start = Some(false);
    settings.auth.jwt_keys = vec![JwtKey {
        kid: "a".into(),
        secret: "some secret".to_string().into(),
    }];
    settings.auth.active_kid = "b".into();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Application::from_listener(settings, listener)
        .await
        .err()
        .expect("start-up fails");
    assert!(err.to_string().contains("active_kid \"b\""), "{err}");
}

#[actix_web::test]
async fn logout_revokes_the_session() {
    let app = spawn_app().await;
    let (user, _) = app.patient().await;
    let t = sign_in(&app, &user.email).await;
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    // Rotate once: logging out with the latest token ends the whole login.
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    let refresh2 = expect(r, 200).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A second, independent login survives the first one's logout.
    let other = sign_in(&app, &user.email).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    let logout = |token: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/auth/logout"))
                .form(&[("refresh_token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    let r = logout(refresh2.clone()).await;
    assert_eq!(r.status(), 204);
    let r = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &other)])
        .await;
    expect(r, 200).await;
    // Unknown tokens: the same 204 (nothing to reveal); no token: 400.
    assert_eq!(logout("made-up".into()).await.status(), 204);
    let r = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .form(&[("something", "else")])
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 400).await["code"], "invalid_form");
}

struct SelfSigned {
    dir: std::path::PathBuf,
    cert_pem: String,
}

impl SelfSigned {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("docspot_test_tls_{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
        Self {
            dir,
            cert_pem: c.cert.pem(),
        }
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_web::test]
async fn tls_is_served_with_hsts() {
    let tls = SelfSigned::new();
    let (cert, key) = (tls.dir.join("cert.pem"), tls.dir.join("key.pem"));
    let app = spawn_app_with(with(move |s| {
        s.http.tls_cert = Some(cert.clone());
        s.http.tls_key = Some(key.clone());
    }))
    .await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{port}/api/v1/doctors"))
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Plain HTTP on a TLS port gets no answer.
    let plain_works = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(!plain_works);
    // An untrusting client refuses the self-signed certificate.
    let r = reqwest::Client::new()
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(r.is_err());
}

#[actix_web::test]
async fn plain_http_sends_no_hsts() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/doctors"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("strict-transport-security"));
    assert_eq!(r.headers()["x-frame-options"], "DENY");
}

#[actix_web::test]
async fn bad_tls_files_stop_start_up_with_a_clear_error() {
    let tls = SelfSigned::new();
    let missing = tls.dir.join("missing.pem");
    let mut settings = Settings::load().unwrap();
    settings.database_url =
        format!("sqlite://{}", tls.dir.join("docspot_test.db").display()).into();
    settings.demo.seed_on_start = Some(false);
    settings.http.tls_cert = Some(missing.clone());
    settings.http.tls_key = Some(tls.dir.join("key.pem"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Application::from_listener(settings.clone(), listener)
        .await
        .err()
        .expect("start-up fails");
    let msg = err.to_string();
    assert!(
        msg.contains("http.tls_cert") && msg.contains("missing.pem"),
        "{msg}"
    );

    settings.http.tls_cert = Some(tls.dir.join("cert.pem"));
    settings.http.tls_key = None;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Application::from_listener(settings, listener)
        .await
        .err()
        .expect("start-up fails");
    assert!(err.to_string().contains("set together"), "{err}");
}

#[actix_web::test]
async fn wrong_methods_get_405_with_allow() {
    let app = spawn_app().await;
    let r = app
        .client
        .delete(app.url("/api/v1/appointments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET, POST");
    assert_eq!(expect(r, 405).await["code"], "method_not_allowed");
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/doctors/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET, PUT");
    expect(r, 405).await;
    // Unknown paths stay 404.
    let r = app
        .client
        .delete(app.url("/api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 404).await["code"], "not_found");
}

/// Debian's PostgreSQL serves this self-signed certificate for `localhost`:
/// here it stands in for the private CA a production database would have.
const PG_SERVER_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[actix_web::test]
async fn postgresql_is_reached_over_verified_tls_when_the_url_asks() {
    use secrecy::ExposeSecret;
    let tls_url = |url: &str, root: Option<&str>| {
        let url = url.replace("@127.0.0.1:", "@localhost:");
        match root {
            Some(r) => format!("{url}?sslmode=require&sslrootcert={r}"),
            None => format!("{url}?sslmode=require"),
        }
    };
    let app = spawn_app_with(Options {
        backend: Some(crate::helpers::Kind::Postgres),
        settings: Some(Arc::new(move |s| {
            s.database_url = tls_url(s.database_url.expose_secret(), Some(PG_SERVER_CERT)).into();
        })),
        ..Default::default()
    })
    .await;
    let pg = app.pg().await;
    let ssl: String = pg.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "this test needs PostgreSQL with ssl = on (Debian's default)"
    );
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let r = app
        .book(&ann, f.doctor.id, crate::helpers::tomorrow_at(9, 0), None)
        .await;
    expect(r, 201).await;
    // Every connection DocSpot holds to its database is encrypted.
    let rows = pg
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "DocSpot has connections open");
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "all of them over TLS"
    );

    // A certificate nobody vouches for (Debian's self-signed one, checked
    // against the public roots) stops start-up with a clear error.
    let mut settings = app.state.settings.clone();
    settings.database_url = tls_url(&app.database.url(), None).into();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Application::from_listener(settings, listener)
        .await
        .err()
        .expect("start-up fails");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

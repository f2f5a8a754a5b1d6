use crate::helpers::{expect, spawn_app};

#[actix_web::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(expect(r, 200).await["status"], "ok");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    let v = expect(r, 200).await;
    assert_eq!(v["checks"]["database"], "ok");
}

#[actix_web::test]
async fn openapi_document_lists_the_contract() {
    let app = spawn_app().await;
    let v = app.openapi().await;
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/token",
        "/api/v1/doctors",
        "/api/v1/doctors/{id}/slots",
        "/api/v1/appointments",
        "/api/v1/appointments/{id}/reschedule",
        "/api/v1/holds",
    ] {
        assert!(v["paths"][path].is_object(), "{path} documented");
    }
}

#[actix_web::test]
async fn unknown_routes_and_bad_json_are_problems() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(expect(r, 404).await["code"], "not_found");
    let (_, token) = app.patient().await;
    let r = app
        .client
        .post(app.url("/api/v1/appointments"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 400).await["code"], "invalid_json");
    let r = app
        .client
        .post(app.url("/api/v1/appointments"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"doctor_id\":\"{}\"}}", "x".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 413).await["code"], "body_too_large");
}

#[actix_web::test]
async fn responses_carry_security_headers_and_cors_follows_the_allow_list() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/doctors"))
        .send()
        .await
        .unwrap();
    for (h, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        assert_eq!(
            r.headers().get(h).map(|v| v.to_str().unwrap()),
            Some(v),
            "{h}"
        );
    }
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/appointments"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let ok = preflight("https://allowed.example").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://allowed.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[actix_web::test]
async fn the_connection_cap_per_worker_is_applied() {
    // One worker taking at most two connections: with two live watchers
    // connected, a third connection is not served until one of them leaves.
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        settings: Some(std::sync::Arc::new(|s: &mut docspot::config::Settings| {
            s.http.workers = 1;
            s.http.max_connections_per_worker = 2;
        })),
        ..Default::default()
    })
    .await;
    let first = app.ws_connect(None, false).await;
    let _second = app.ws_connect(None, false).await;
    let third = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(std::time::Duration::from_millis(800))
        .send()
        .await;
    assert!(third.is_err(), "a third connection was served: {third:?}");
    drop(first);
    let r = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .expect("served once a connection closed");
    expect(r, 200).await;
}

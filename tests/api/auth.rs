use serde_json::json;

use crate::helpers::{expect, spawn_app};

#[actix_web::test]
async fn register_then_sign_in_and_refresh() {
    let app = spawn_app().await;
    let r = app
        .register("Ann@Example.org", "long enough pw", "Ann")
        .await;
    let v = expect(r, 201).await;
    assert_eq!(v["email"], "ann@example.org");
    assert_eq!(v["role"], "patient");
    assert!(v["id"].is_string());

    let r = app
        .register("ann@example.org", "another pw!!", "Ann 2")
        .await;
    assert_eq!(expect(r, 409).await["code"], "email_taken");

    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", "long enough pw"),
        ])
        .await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t = expect(r, 200).await;
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().unwrap() > 0);
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();

    // The access token works.
    let r = app.get(access, "/api/v1/appointments").await;
    assert_eq!(expect(r, 200).await["appointments"], json!([]));

    // Refresh rotates: the new token works, the old one is used up.
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    let t2 = expect(r, 200).await;
    let refresh2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh, refresh2);

    // Replaying the old one is theft: it fails and revokes the family.
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let r = app
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ])
        .await;
    assert_eq!(
        r.status(),
        400,
        "the whole family is revoked after a replay"
    );
}

#[actix_web::test]
async fn bad_credentials_and_input_are_clear_errors() {
    let app = spawn_app().await;
    expect(
        app.register("bob@example.org", "long enough pw", "Bob")
            .await,
        201,
    )
    .await;

    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", "bob@example.org"),
            ("password", "wrong password"),
        ])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", "nobody@example.org"),
            ("password", "whatever1"),
        ])
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let r = app.token(&[("grant_type", "client_credentials")]).await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    let r = app.token(&[("username", "x")]).await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );

    assert_eq!(
        expect(
            app.register("not-an-email", "long enough pw", "X").await,
            422
        )
        .await["code"],
        "invalid_email"
    );
    assert_eq!(
        expect(app.register("x@example.org", "short", "X").await, 422).await["code"],
        "invalid_password"
    );
    assert_eq!(
        expect(
            app.register("y@example.org", "long enough pw", " ").await,
            422
        )
        .await["code"],
        "invalid_name"
    );

    // Protected routes need a valid token.
    let r = app
        .client
        .get(app.url("/api/v1/appointments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(expect(r, 401).await["code"], "unauthorized");
    let r = app.get("garbage.token.here", "/api/v1/appointments").await;
    assert_eq!(expect(r, 401).await["code"], "unauthorized");
}

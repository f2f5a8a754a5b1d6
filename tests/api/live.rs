//! Live availability over WebSocket: snapshots, ordered deltas, resume,
//! private topics, bad frames, slow consumers, and two nodes through Redis.

use std::{
    process::{Child, Command, Stdio},
    time::Duration as StdDuration,
};

use chrono::{DateTime, Duration, Utc};
use docspot::domain::Role;
use serde_json::{Value, json};

use crate::helpers::{
    Options, REDIS, cluster_node, expect, spawn_app, spawn_app_with, tomorrow_at,
};

fn starts(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[actix_web::test]
async fn watchers_get_a_snapshot_then_every_change_in_order() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let topic = format!("doctor:{}", f.doctor.id);
    let from = tomorrow_at(8, 0);
    for msgpack in [false, true] {
        let mut ws = app.ws_connect(None, msgpack).await;
        let snap = ws
            .subscribe(json!({"type": "subscribe", "topic": topic, "from": from, "to": from + Duration::hours(10)}))
            .await;
        assert_eq!(snap["topic"], topic);
        assert_eq!(snap["reset"], false);
        let slots = snap["data"]["slots"].as_array().unwrap();
        assert_eq!(slots.len(), 20);
        let seq0 = snap["seq"].as_u64().unwrap();
        let at = tomorrow_at(9 + msgpack as u32, 0);
        assert_eq!(
            slots.iter().find(|s| starts(&s["start"]) == at).unwrap()["status"],
            "free"
        );

        // Book, hold, release, cancel: one delta each, numbered in order.
        let sent = Utc::now();
        let r = app.book(&ann, f.doctor.id, at, None).await;
        let answered = Utc::now();
        let a = expect(r, 201).await;
        let h = expect(
            app.hold(&ann, f.doctor.id, at + Duration::hours(2)).await,
            201,
        )
        .await;
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/holds/{}", h["id"].as_str().unwrap())))
            .bearer_auth(&ann)
            .send()
            .await
            .unwrap();
        expect(r, 200).await;
        let expected = [
            ("booked", "booked", at),
            ("held", "held", at + Duration::hours(2)),
            ("released", "free", at + Duration::hours(2)),
        ];
        let mut last_commit = sent;
        for (i, (kind, status, start)) in expected.iter().enumerate() {
            let d = ws.recv().await;
            assert_eq!(d["type"], "delta", "{d}");
            assert_eq!(d["seq"].as_u64().unwrap(), seq0 + 1 + i as u64, "{d}");
            assert_eq!(d["data"]["kind"], *kind);
            assert_eq!(d["data"]["status"], *status);
            assert_eq!(starts(&d["data"]["start"]), *start);
            assert!(
                d["data"].get("patient_id").is_none(),
                "no patient data on public topics"
            );
            // The commit instant: present, RFC 3339 UTC, in commit order.
            let committed = starts(&d["data"]["at"]);
            assert!(d["data"]["at"].as_str().unwrap().ends_with('Z'), "{d}");
            assert!(committed >= last_commit, "{d}");
            last_commit = committed;
            if i == 0 {
                assert!(
                    sent <= committed && committed <= answered,
                    "the booking committed between the request ({sent}) and its 201 ({answered}): {d}"
                );
            }
        }
        // Staff cancel the booking: the slot is free again.
        let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
        expect(
            app.post(
                &admin,
                &format!("/api/v1/appointments/{}/cancel", a["id"].as_str().unwrap()),
                json!({}),
            )
            .await,
            200,
        )
        .await;
        let d = ws.recv().await;
        assert_eq!(d["seq"].as_u64().unwrap(), seq0 + 4, "{d}");
        assert_eq!(d["data"]["kind"], "cancelled");
        assert_eq!(d["data"]["status"], "free");
    }
}

#[actix_web::test]
async fn resume_gets_exactly_the_missed_deltas_or_a_fresh_snapshot() {
    let app = spawn_app_with(Options {
        replay_buffer: 3,
        ..Default::default()
    })
    .await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let topic = format!("doctor:{}", f.doctor.id);
    let sub = |resume: Option<(u64, &str)>| {
        let mut v = json!({"type": "subscribe", "topic": topic, "from": tomorrow_at(8, 0), "to": tomorrow_at(18, 0)});
        if let Some((seq, epoch)) = resume {
            v["resume_seq"] = json!(seq);
            v["epoch"] = json!(epoch);
        }
        v
    };
    let mut ws = app.ws_connect(None, false).await;
    let snap = ws.subscribe(sub(None)).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(8, 0), None).await,
        201,
    )
    .await;
    let last = ws.recv().await["seq"].as_u64().unwrap();
    drop(ws);

    // Two changes while away: exactly those two come back, nothing else.
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(10, 0), None).await,
        201,
    )
    .await;
    let mut ws = app.ws_connect(None, false).await;
    ws.send(sub(Some((last, &epoch)))).await;
    let d1 = ws.recv().await;
    let d2 = ws.recv().await;
    assert_eq!(
        (d1["type"].as_str(), d1["seq"].as_u64()),
        (Some("delta"), Some(last + 1))
    );
    assert_eq!(
        (d2["type"].as_str(), d2["seq"].as_u64()),
        (Some("delta"), Some(last + 2))
    );
    assert_eq!(starts(&d2["data"]["start"]), tomorrow_at(10, 0));
    assert!(ws.recv_within(1).await.is_none(), "nothing delivered twice");
    drop(ws);

    // Past the replay buffer (3): a snapshot flagged as a reset.
    for h in [11, 12, 13, 14] {
        expect(
            app.book(&ann, f.doctor.id, tomorrow_at(h, 0), None).await,
            201,
        )
        .await;
    }
    let mut ws = app.ws_connect(None, false).await;
    let snap = ws.subscribe(sub(Some((last + 2, &epoch)))).await;
    assert_eq!(snap["reset"], true);
    let booked = snap["data"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "booked")
        .count();
    assert_eq!(booked, 7, "the snapshot holds the true state");
    // An unknown epoch (another node, a restart) also gets a snapshot.
    let mut ws = app.ws_connect(None, false).await;
    let snap = ws.subscribe(sub(Some((1, "some-other-node")))).await;
    assert_eq!(snap["reset"], true);
}

#[actix_web::test]
async fn private_topics_need_the_right_token() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let other_clinic = app.clinic("UTC", 0).await;
    let g = app.doctor_in(other_clinic, "Dr. G", "08:00", "18:00").await;
    let (_, ann) = app.patient().await;
    let (_, doc) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, other_doc) = app.user(Role::Doctor, Some(&g.doctor), None).await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let (_, other_admin) = app.user(Role::ClinicAdmin, None, Some(other_clinic)).await;
    let provider = format!("provider:{}", f.doctor.id);

    for (token, ok) in [
        (&ann, false),
        (&other_doc, false),
        (&other_admin, false),
        (&doc, true),
        (&admin, true),
    ] {
        let mut ws = app.ws_connect(Some(token), false).await;
        ws.send(json!({"type": "subscribe", "topic": provider}))
            .await;
        let m = ws.recv().await;
        if ok {
            assert_eq!(m["type"], "snapshot", "{m}");
        } else {
            assert_eq!(
                (m["type"].as_str(), m["code"].as_str()),
                (Some("error"), Some("forbidden")),
                "{m}"
            );
        }
    }
    // Anonymous: no provider alerts, no `me`.
    let mut ws = app.ws_connect(None, false).await;
    ws.send(json!({"type": "subscribe", "topic": provider}))
        .await;
    assert_eq!(ws.recv().await["code"], "unauthorized");
    ws.send(json!({"type": "subscribe", "topic": "me"})).await;
    assert_eq!(ws.recv().await["code"], "unauthorized");
    // Signing in on the open connection works; a bad token does not.
    ws.send(json!({"type": "auth", "token": "nonsense"})).await;
    assert_eq!(ws.recv().await["code"], "unauthorized");
    ws.send(json!({"type": "auth", "token": ann})).await;
    assert_eq!(ws.recv().await["type"], "authenticated");
    let me = ws
        .subscribe(json!({"type": "subscribe", "topic": "me"}))
        .await;
    assert_eq!(me["data"]["appointments"], json!([]));
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let d = ws.recv().await;
    assert_eq!(d["topic"], "me");
    assert_eq!(d["data"]["kind"], "booked");
    assert!(starts(&d["data"]["at"]) <= Utc::now(), "{d}");
    // A bad token on the upgrade is refused before any WebSocket exists.
    let r = app
        .client
        .get(app.url("/api/v1/live?access_token=bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[actix_web::test]
async fn providers_get_alerts_and_what_they_missed_offline() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let (_, doc) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let topic = format!("provider:{}", f.doctor.id);
    let mut ws = app.ws_connect(Some(&doc), false).await;
    let snap = ws
        .subscribe(json!({"type": "subscribe", "topic": topic}))
        .await;
    assert_eq!(snap["data"]["alerts"], json!([]));
    let a = expect(
        app.book(&ann, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let d = ws.recv().await;
    assert_eq!(d["data"]["alert"]["kind"], "booked");
    assert_eq!(d["data"]["alert"]["appointment_id"], a["id"]);
    let last = d["seq"].as_u64().unwrap();
    drop(ws);

    // Offline: a cancellation and a new booking.
    app.post(
        &admin,
        &format!("/api/v1/appointments/{}/cancel", a["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(10, 0), None).await,
        201,
    )
    .await;
    let mut ws = app.ws_connect(Some(&doc), true).await;
    let snap = ws
        .subscribe(json!({"type": "subscribe", "topic": topic, "resume_seq": last}))
        .await;
    let kinds: Vec<&str> = snap["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["cancelled", "booked"]);
    assert!(snap["seq"].as_u64().unwrap() > last);
}

#[actix_web::test]
async fn bad_frames_get_error_frames_and_the_connection_lives_on() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let mut ws = app.ws_connect(None, false).await;
    ws.send_raw("not json".into()).await;
    assert_eq!(ws.recv().await["code"], "malformed_message");
    ws.send_raw(json!({"type": "subscribe", "topic": "weather:today"}).to_string())
        .await;
    assert_eq!(ws.recv().await["code"], "invalid_topic");
    ws.send_raw(format!(
        "{{\"type\":\"auth\",\"token\":\"{}\"}}",
        "x".repeat(20_000)
    ))
    .await;
    assert_eq!(ws.recv().await["code"], "frame_too_large");
    ws.send(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id), "from": Utc::now(), "to": Utc::now() + Duration::days(400)})).await;
    assert_eq!(ws.recv().await["code"], "range_too_long");
    ws.send(json!({"type": "unsubscribe", "topic": "me"})).await;
    assert_eq!(ws.recv().await["code"], "not_subscribed");
    // Still alive and useful.
    let snap = ws
        .subscribe(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id)}))
        .await;
    assert_eq!(snap["type"], "snapshot");
    ws.send(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id)}))
        .await;
    assert_eq!(ws.recv().await["code"], "already_subscribed");
}

#[actix_web::test]
async fn a_slow_watcher_does_not_hold_up_a_fast_one() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let topic = format!("doctor:{}", f.doctor.id);
    let sub = json!({"type": "subscribe", "topic": topic, "from": Utc::now(), "to": Utc::now() + Duration::days(20)});
    // The slow one subscribes and then stops reading.
    let mut slow = app.ws_connect(None, false).await;
    slow.subscribe(sub.clone()).await;
    let mut fast = app.ws_connect(None, false).await;
    let seq0 = fast.subscribe(sub).await["seq"].as_u64().unwrap();
    let day = Utc::now().date_naive() + Duration::days(2);
    let n = 40;
    for i in 0..n {
        let at = day.and_hms_opt(8, 0, 0).unwrap().and_utc()
            + Duration::days(i / 20)
            + Duration::minutes(30 * (i % 20));
        expect(app.book(&ann, f.doctor.id, at, None).await, 201).await;
    }
    for i in 0..n as u64 {
        let d = fast
            .recv_within(5)
            .await
            .expect("the fast watcher is never held up");
        assert_eq!(d["seq"].as_u64().unwrap(), seq0 + 1 + i);
    }
    // The slow one, reading at last, sees a consistent stream: ordered
    // deltas, or a reset snapshot followed by ordered deltas.
    let mut last_seq = None;
    let mut booked = std::collections::HashSet::new();
    while let Some(m) = slow.recv_within(1).await {
        let seq = m["seq"].as_u64().unwrap();
        if m["type"] == "snapshot" {
            assert_eq!(m["reset"], true);
            booked = m["data"]["slots"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["status"] == "booked")
                .map(|s| s["start"].as_str().unwrap().to_string())
                .collect();
        } else {
            if let Some(l) = last_seq {
                assert_eq!(seq, l + 1, "in order, no gaps, no repeats");
            }
            booked.insert(m["data"]["start"].as_str().unwrap().to_string());
        }
        last_seq = Some(seq);
    }
    assert_eq!(
        booked.len(),
        n as usize,
        "the slow watcher ends with the true state"
    );
}

#[actix_web::test]
async fn a_booking_on_one_node_reaches_watchers_on_another() {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let a = spawn_app_with(cluster_node(None, REDIS, &prefix)).await;
    let b = spawn_app_with(cluster_node(Some(a.database.clone()), REDIS, &prefix)).await;
    let f = a.fixture().await;
    let (_, ann) = a.patient().await;
    let topic = format!("doctor:{}", f.doctor.id);
    let mut ws = b.ws_connect(None, false).await;
    let seq0 = ws
        .subscribe(json!({"type": "subscribe", "topic": topic, "from": tomorrow_at(0, 0), "to": tomorrow_at(23, 0)}))
        .await["seq"]
        .as_u64()
        .unwrap();
    let ready = expect(b.client.get(b.url("/readyz")).send().await.unwrap(), 200).await;
    assert_eq!(ready["checks"]["cross_node_push"], "ok");
    for (i, h) in [9, 10, 11].iter().enumerate() {
        let sent = Utc::now();
        let r = a.book(&ann, f.doctor.id, tomorrow_at(*h, 0), None).await;
        let answered = Utc::now();
        expect(r, 201).await;
        let d = ws.recv_within(5).await.expect("the change crosses nodes");
        assert_eq!(d["seq"].as_u64().unwrap(), seq0 + 1 + i as u64);
        assert_eq!(starts(&d["data"]["start"]), tomorrow_at(*h, 0));
        // B passes on A's commit instant, not the time it relayed it.
        let committed = starts(&d["data"]["at"]);
        assert!(sent <= committed && committed <= answered, "{d}");
    }
    // Node B's calendar took the changes in: it refuses the slots from memory.
    let free = b
        .slots(f.doctor.id, tomorrow_at(8, 0), tomorrow_at(12, 0))
        .await;
    assert!(!free.contains(&tomorrow_at(9, 0)) && !free.contains(&tomorrow_at(11, 0)));
}

/// Whether `/readyz` of `app` reports cross-node push degraded within 5 s.
async fn push_degraded_within_5s(app: &crate::helpers::TestApp) -> bool {
    for _ in 0..50 {
        let r = expect(
            app.client.get(app.url("/readyz")).send().await.unwrap(),
            200,
        )
        .await;
        if r["checks"]["cross_node_push"]
            .as_str()
            .unwrap()
            .starts_with("degraded")
        {
            return true;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    false
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> Self {
        Self::start_with(port, &["--port", &port.to_string()])
    }

    /// TLS only, on `port`, with this certificate; clients need none.
    fn start_tls(port: u16, cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ],
        )
    }

    fn start_with(port: u16, listen: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        RedisServer { child, port }
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn watchers_recover_the_true_state_after_redis_restarts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = RedisServer::start(port);
    redis.wait_ready().await;
    let url = format!("redis://127.0.0.1:{port}");
    let a = spawn_app_with(cluster_node(None, &url, "restart")).await;
    let b = spawn_app_with(cluster_node(Some(a.database.clone()), &url, "restart")).await;
    let f = a.fixture().await;
    let (_, ann) = a.patient().await;
    let topic = format!("doctor:{}", f.doctor.id);
    let mut ws = b.ws_connect(None, false).await;
    ws.subscribe(json!({"type": "subscribe", "topic": topic, "from": tomorrow_at(0, 0), "to": tomorrow_at(23, 0)})).await;

    drop(redis);
    // Booking goes on without Redis; node A says cross-node push is degraded.
    expect(
        a.book(&ann, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    assert!(
        push_degraded_within_5s(&a).await,
        "/readyz reports degraded cross-node push"
    );

    let _redis = RedisServer::start(port);
    // B reconnects, resynchronises, and its watcher ends up with the truth.
    let mut booked = false;
    while let Some(m) = ws.recv_within(15).await {
        let has = |slots: &Value| {
            slots
                .as_array()
                .unwrap()
                .iter()
                .any(|s| starts(&s["start"]) == tomorrow_at(9, 0) && s["status"] == "booked")
        };
        if (m["type"] == "snapshot" && has(&m["data"]["slots"]))
            || (m["type"] == "delta" && starts(&m["data"]["start"]) == tomorrow_at(9, 0))
        {
            booked = true;
            break;
        }
    }
    assert!(
        booked,
        "the watcher on B learns of the booking made while Redis was down"
    );
    let free = b
        .slots(f.doctor.id, tomorrow_at(8, 0), tomorrow_at(12, 0))
        .await;
    assert!(!free.contains(&tomorrow_at(9, 0)), "B's calendar reloaded");
    let ready = expect(b.client.get(b.url("/readyz")).send().await.unwrap(), 200).await;
    assert_eq!(ready["checks"]["cross_node_push"], "ok");
}

#[actix_web::test]
async fn provider_numbering_starts_after_existing_alerts_for_every_watcher() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let (_, doc) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    // History before anyone watches.
    for h in [9, 10, 11] {
        expect(
            app.book(&ann, f.doctor.id, tomorrow_at(h, 0), None).await,
            201,
        )
        .await;
    }
    let topic = format!("provider:{}", f.doctor.id);
    let mut d1 = app.ws_connect(Some(&doc), false).await;
    let s1 = d1
        .subscribe(json!({"type": "subscribe", "topic": topic}))
        .await;
    assert_eq!(
        s1["data"]["alerts"].as_array().unwrap().len(),
        3,
        "the latest alerts"
    );
    // A second watcher (an admin) also gets them, not an empty list.
    let mut d2 = app.ws_connect(Some(&admin), false).await;
    let s2 = d2
        .subscribe(json!({"type": "subscribe", "topic": topic}))
        .await;
    assert_eq!(s2["data"]["alerts"], s1["data"]["alerts"]);
    // One new booking: exactly one new alert each, not the history again.
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(12, 0), None).await,
        201,
    )
    .await;
    for ws in [&mut d1, &mut d2] {
        let d = ws.recv().await;
        assert_eq!(d["data"]["alert"]["kind"], "booked");
        assert!(d["seq"].as_u64().unwrap() > s1["seq"].as_u64().unwrap());
        assert!(ws.recv_within(1).await.is_none(), "nothing else");
    }
    // A bogus huge resume from one client does not silence the others.
    let mut d3 = app.ws_connect(Some(&doc), false).await;
    d3.subscribe(
        json!({"type": "subscribe", "topic": topic, "resume_seq": 9_000_000_000_000_000_000u64}),
    )
    .await;
    expect(
        app.book(&ann, f.doctor.id, tomorrow_at(13, 0), None).await,
        201,
    )
    .await;
    assert_eq!(d1.recv().await["data"]["alert"]["kind"], "booked");
}

#[actix_web::test]
async fn a_connection_cannot_switch_users_and_failed_subscriptions_can_be_retried() {
    let app = spawn_app().await;
    let (_, ann) = app.patient().await;
    let (_, bob) = app.patient().await;
    let mut ws = app.ws_connect(Some(&ann), false).await;
    ws.send(json!({"type": "auth", "token": bob})).await;
    assert_eq!(ws.recv().await["code"], "already_authenticated");
    // Same user again is fine (a refreshed token).
    ws.send(json!({"type": "auth", "token": ann})).await;
    assert_eq!(ws.recv().await["type"], "authenticated");
    let unknown = format!("doctor:{}", uuid::Uuid::new_v4());
    for _ in 0..2 {
        ws.send(json!({"type": "subscribe", "topic": unknown}))
            .await;
        assert_eq!(ws.recv().await["code"], "doctor_not_found");
    }
}

#[actix_web::test]
async fn wall_displays_and_schedule_changes_update_live() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let mut board = app.ws_connect(None, false).await;
    let snap = board
        .subscribe(json!({"type": "subscribe", "topic": format!("clinic:{}", f.clinic)}))
        .await;
    let lines = snap["data"]["doctors"].as_array().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "Dr. Test");
    assert!(lines[0]["next_free"]["start"].is_string());
    let next_free = starts(&lines[0]["next_free"]["start"]);

    // Booking the next free slot moves the board's "next free" on.
    expect(app.book(&ann, f.doctor.id, next_free, None).await, 201).await;
    let d = board.recv().await;
    assert_eq!(d["type"], "delta");
    assert_eq!(
        d["seq"].as_u64().unwrap(),
        snap["seq"].as_u64().unwrap() + 1
    );
    assert!(
        starts(&d["data"]["doctor"]["next_free"]["start"]) > next_free,
        "{d}"
    );
    assert!(starts(&d["data"]["at"]) <= Utc::now(), "{d}");

    // Time off announced to availability watchers as a schedule change.
    let mut patient_view = app.ws_connect(None, false).await;
    patient_view
        .subscribe(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id)}))
        .await;
    let r = app
        .post(
            &admin,
            &format!("/api/v1/doctors/{}/exceptions", f.doctor.id),
            json!({"kind": "time_off", "start": tomorrow_at(12, 0), "end": tomorrow_at(14, 0)}),
        )
        .await;
    expect(r, 201).await;
    let d = patient_view.recv().await;
    assert_eq!(d["data"]["kind"], "schedule_changed");
    assert!(starts(&d["data"]["at"]) <= Utc::now(), "{d}");
}

#[actix_web::test]
async fn watchers_hear_when_a_doctor_is_deactivated() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let mut view = app.ws_connect(None, false).await;
    view.subscribe(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id)}))
        .await;
    let r = app
        .client
        .put(app.url(&format!("/api/v1/doctors/{}", f.doctor.id)))
        .bearer_auth(&admin)
        .json(&json!({"name": "Dr. Test", "active": false}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    let d = view.recv().await;
    assert_eq!(d["type"], "delta", "{d}");
    assert_eq!(d["data"]["kind"], "schedule_changed", "{d}");
    // And the doctor takes no bookings any more.
    let (_, ann) = app.patient().await;
    let r = app.book(&ann, f.doctor.id, tomorrow_at(9, 0), None).await;
    assert_eq!(r.status().as_u16(), 404);
}

#[actix_web::test]
async fn private_topics_end_when_the_token_expires_until_a_fresh_one_arrives() {
    // Short tokens (and the default 10 s heartbeat, so it is not the
    // heartbeat that notices): the session must end the sign-in by itself
    // when the token runs out, since nothing re-checks a token after it
    // arrived.
    let app = spawn_app_with(Options {
        settings: Some(std::sync::Arc::new(|s| {
            s.auth.access_token_ttl_secs = 3;
        })),
        ..Options::default()
    })
    .await;
    let f = app.fixture().await;
    let (ann, token) = app.patient().await;
    let (bob, _) = app.patient().await;
    let doctor = format!("doctor:{}", f.doctor.id);
    let mut ws = app.ws_connect(Some(&token), false).await;
    ws.subscribe(json!({"type": "subscribe", "topic": "me"}))
        .await;
    ws.subscribe(json!({"type": "subscribe", "topic": doctor}))
        .await;

    let m = ws.recv_within(6).await.expect("an expiry notice");
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{m}"
    );
    // Her own booking (made with a fresh token over HTTP) still shows on the
    // public doctor topic, but no longer on `me`.
    let fresh = app.state.keys.issue(&ann).unwrap();
    expect(
        app.book(&fresh, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let d = ws.recv().await;
    assert_eq!(d["topic"], doctor.as_str(), "{d}");
    assert!(
        ws.recv_within(1).await.is_none(),
        "nothing more: `me` is closed"
    );
    ws.send(json!({"type": "subscribe", "topic": "me"})).await;
    assert_eq!(ws.recv().await["code"], "unauthorized");

    // Nobody else may take over the connection; the same user may go on.
    let intruder = app.state.keys.issue(&bob).unwrap();
    ws.send(json!({"type": "auth", "token": intruder})).await;
    assert_eq!(ws.recv().await["code"], "already_authenticated");
    let fresh = app.state.keys.issue(&ann).unwrap();
    ws.send(json!({"type": "auth", "token": fresh})).await;
    assert_eq!(ws.recv().await["type"], "authenticated");
    let me = ws
        .subscribe(json!({"type": "subscribe", "topic": "me"}))
        .await;
    assert_eq!(
        me["data"]["appointments"].as_array().map(Vec::len),
        Some(1),
        "{me}"
    );
}

#[actix_web::test]
async fn a_connection_watches_at_most_max_subscriptions_topics() {
    let app = spawn_app_with(Options {
        settings: Some(std::sync::Arc::new(|s| s.live.max_subscriptions = 2)),
        ..Options::default()
    })
    .await;
    let f = app.fixture().await;
    let g = app
        .doctor_in(f.clinic, "Dr. Second", "08:00", "18:00")
        .await;
    let mut ws = app.ws_connect(None, false).await;
    ws.subscribe(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id)}))
        .await;
    ws.subscribe(json!({"type": "subscribe", "topic": format!("clinic:{}", f.clinic)}))
        .await;
    let third = format!("doctor:{}", g.doctor.id);
    ws.send(json!({"type": "subscribe", "topic": third})).await;
    let m = ws.recv().await;
    assert_eq!(
        (m["code"].as_str(), m["topic"].as_str()),
        (Some("too_many_subscriptions"), Some(third.as_str())),
        "{m}"
    );
    // Leaving one makes room.
    ws.send(json!({"type": "unsubscribe", "topic": format!("clinic:{}", f.clinic)}))
        .await;
    ws.subscribe(json!({"type": "subscribe", "topic": third}))
        .await;
}

#[actix_web::test]
async fn nodes_reach_redis_over_tls_and_check_its_certificate() {
    let dir = std::env::temp_dir().join(format!("docspot_test_rediss_{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = RedisServer::start_tls(port, &cert, &key);
    redis.wait_ready().await;
    let url = format!("rediss://localhost:{port}");
    let node = |db, ca: Option<std::path::PathBuf>| {
        let mut o = cluster_node(db, &url, "tls");
        o.settings = Some(std::sync::Arc::new(move |s| s.redis_ca_file = ca.clone()));
        o
    };

    let a = spawn_app_with(node(None, Some(cert.clone()))).await;
    let b = spawn_app_with(node(Some(a.database.clone()), Some(cert.clone()))).await;
    let f = a.fixture().await;
    let (_, ann) = a.patient().await;
    let mut ws = b.ws_connect(None, false).await;
    ws.subscribe(json!({"type": "subscribe", "topic": format!("doctor:{}", f.doctor.id), "from": tomorrow_at(0, 0), "to": tomorrow_at(23, 0)}))
        .await;
    expect(
        a.book(&ann, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let d = ws
        .recv_within(5)
        .await
        .expect("the change crosses nodes over TLS");
    assert_eq!(starts(&d["data"]["start"]), tomorrow_at(9, 0));
    let ready = expect(b.client.get(b.url("/readyz")).send().await.unwrap(), 200).await;
    assert_eq!(ready["checks"]["cross_node_push"], "ok");

    // Checked against the system's trust store instead, the self-signed
    // certificate is refused: that node reports cross-node push degraded.
    let c = spawn_app_with(node(Some(a.database.clone()), None)).await;
    assert!(
        push_degraded_within_5s(&c).await,
        "an untrusted Redis certificate is not accepted"
    );

    // A CA file without a certificate stops start-up instead.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut settings = a.state.settings.clone();
    settings.redis_ca_file = Some(junk);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = docspot::startup::Application::from_listener(settings, listener)
        .await
        .err()
        .expect("start-up fails");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    drop(redis);
    std::fs::remove_dir_all(dir).unwrap();
}

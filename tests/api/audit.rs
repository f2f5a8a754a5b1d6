//! The audit log: what gets recorded, who may read it, and that the chain
//! holds — and breaks visibly when tampered with.

use std::sync::Arc;

use chrono::Duration;
use docspot::{
    audit::{self, AuditStore, Verdict},
    config::Backend,
    domain::Role,
};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    Options, PG, TestApp, TestDb, expect, spawn_app, spawn_app_with, spawn_two_nodes, tomorrow_at,
};

fn backend(db: &TestDb) -> Backend {
    match db {
        TestDb::Postgres(name) => Backend::Postgres(format!("{PG}/{name}")),
        TestDb::Sqlite(path) => Backend::Sqlite(path.clone()),
    }
}

fn audit_store(app: &TestApp) -> Arc<dyn AuditStore> {
    audit::open(&backend(&app.database)).unwrap()
}

/// Runs raw SQL behind the server's back: `pg` on PostgreSQL, `lite` on
/// SQLite. Returns the database's error, if any.
async fn raw(app: &TestApp, pg: &str, lite: &str) -> Result<(), String> {
    match &app.database {
        TestDb::Postgres(_) => app
            .pg()
            .await
            .batch_execute(pg)
            .await
            .map_err(|e| format!("{e:?}")),
        TestDb::Sqlite(path) => {
            let c = rusqlite::Connection::open(path).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            c.execute_batch(lite).map_err(|e| e.to_string())
        }
    }
}

async fn entries(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app.get(token, &format!("/api/v1/audit?{query}")).await;
    expect(r, 200).await["entries"].as_array().unwrap().clone()
}

fn actions(list: &[Value]) -> Vec<&str> {
    list.iter().map(|e| e["action"].as_str().unwrap()).collect()
}

/// Entries other than the audit log's own reads.
fn not_reads_of_the_log(list: Vec<Value>) -> Vec<Value> {
    list.into_iter()
        .filter(|e| e["action"] != "audit.read")
        .collect()
}

/// Three days ahead: well outside the fixture's cancellation cut-off.
fn later(h: u32) -> chrono::DateTime<chrono::Utc> {
    tomorrow_at(h, 0) + Duration::days(2)
}

#[actix_web::test]
async fn booking_actions_are_recorded_with_who_what_and_from_where() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, pt) = app.patient().await;
    let (doctor_user, dt) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;

    let booked = expect(app.book(&pt, f.doctor.id, later(9), None).await, 201).await;
    let id = booked["id"].as_str().unwrap().to_string();
    expect(
        app.get(&pt, &format!("/api/v1/appointments/{id}")).await,
        200,
    )
    .await;
    expect(
        app.post(&pt, &format!("/api/v1/appointments/{id}/cancel"), json!({}))
            .await,
        200,
    )
    .await;
    let held = expect(app.hold(&pt, f.doctor.id, later(11)).await, 201).await;
    let hid = held["id"].as_str().unwrap().to_string();
    expect(
        app.post(&pt, &format!("/api/v1/holds/{hid}/confirm"), json!({}))
            .await,
        200,
    )
    .await;
    expect(
        app.get(&dt, &format!("/api/v1/doctors/{}/day", f.doctor.id))
            .await,
        200,
    )
    .await;

    let mine = entries(&app, &admin, &format!("actor_id={}", patient.id)).await;
    assert_eq!(
        actions(&mine),
        [
            "appointment.create",
            "appointment.read",
            "appointment.cancel",
            "appointment.hold",
            "appointment.confirm"
        ]
    );
    for e in &mine {
        assert_eq!(e["actor_role"], "patient");
        assert_eq!(e["patient_id"], patient.id.to_string());
        assert_eq!(e["clinic_id"], f.clinic.to_string());
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert_eq!(e["outcome"], "success");
        assert_eq!(e["resource_type"], "appointment");
        assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert_eq!(e["hash"].as_str().unwrap().len(), 64);
    }
    assert_eq!(mine[0]["resource_id"], id);
    assert_eq!(mine[2]["resource_id"], id);
    assert_eq!(mine[4]["resource_id"], hid);
    // Request ids differ per request.
    assert_ne!(mine[0]["request_id"], mine[1]["request_id"]);

    let day = entries(&app, &admin, "action=doctor.day_read").await;
    assert_eq!(day.len(), 1);
    assert_eq!(day[0]["actor_id"], doctor_user.id.to_string());
    assert_eq!(day[0]["actor_role"], "doctor");
    assert_eq!(day[0]["resource_id"], f.doctor.id.to_string());

    // Filtering by patient finds the same five (and the audit read about
    // this patient, recorded before it ran), and the chain is whole.
    let about = entries(&app, &admin, &format!("patient_id={}", patient.id)).await;
    assert_eq!(actions(&about).last(), Some(&"audit.read"));
    assert_eq!(not_reads_of_the_log(about), mine);
    assert!(matches!(
        audit::verify(audit_store(&app).as_ref(), 3).await.unwrap(),
        Verdict::Ok { .. }
    ));
}

#[actix_web::test]
async fn admins_see_only_their_clinic_and_patients_and_doctors_are_refused() {
    let app = spawn_app().await;
    let a = app.fixture().await;
    let b_clinic = app.clinic("UTC", 0).await;
    let b = app.doctor_in(b_clinic, "Dr. Other", "08:00", "18:00").await;
    let (_, pt) = app.patient().await;
    expect(app.book(&pt, a.doctor.id, later(9), None).await, 201).await;
    expect(app.book(&pt, b.doctor.id, later(10), None).await, 201).await;
    let (_, admin_a) = app.user(Role::ClinicAdmin, None, Some(a.clinic)).await;
    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let (_, doctor) = app.user(Role::Doctor, Some(&a.doctor), None).await;

    let seen = entries(&app, &admin_a, "action=appointment.create").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["clinic_id"], a.clinic.to_string());
    let all = entries(&app, &root, "action=appointment.create").await;
    assert_eq!(all.len(), 2, "a platform admin sees every clinic");
    let only_b = entries(
        &app,
        &root,
        &format!("action=appointment.create&clinic_id={b_clinic}"),
    )
    .await;
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0]["clinic_id"], b_clinic.to_string());

    let r = app
        .get(&admin_a, &format!("/api/v1/audit?clinic_id={b_clinic}"))
        .await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");
    for token in [&pt, &doctor] {
        let r = app.get(token, "/api/v1/audit").await;
        assert_eq!(expect(r, 403).await["code"], "forbidden");
    }
    let refused = entries(&app, &root, "action=audit.read").await;
    let refused: Vec<_> = refused
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 2, "both refusals are recorded: {refused:?}");
    let r = app
        .client
        .get(app.url("/api/v1/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 401).await["code"], "unauthorized");

    for (query, code) in [
        ("patient_id=nope", "invalid_filter"),
        ("actor_id=1", "invalid_filter"),
        ("action=appointment.delete", "invalid_filter"),
        ("limit=0", "invalid_filter"),
        ("limit=1001", "invalid_filter"),
        ("after_seq=-1", "invalid_filter"),
        ("from=yesterday", "invalid_time"),
    ] {
        let r = app.get(&root, &format!("/api/v1/audit?{query}")).await;
        assert_eq!(expect(r, 422).await["code"], code, "{query}");
    }
    let r = app.get(&root, "/api/v1/audit?limit=lots").await;
    assert_eq!(r.status(), 400, "a non-number is a malformed query");

    // Reading the log is itself recorded, in the reader's clinic.
    let reads = entries(&app, &admin_a, "action=audit.read").await;
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|e| e["clinic_id"] == a.clinic.to_string()));
}

#[actix_web::test]
async fn attempts_on_someone_elses_appointment_are_recorded_as_denied() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (owner, owner_t) = app.patient().await;
    let (intruder, intruder_t) = app.patient().await;
    let booked = expect(app.book(&owner_t, f.doctor.id, later(9), None).await, 201).await;
    let id = booked["id"].as_str().unwrap();
    let r = app
        .get(&intruder_t, &format!("/api/v1/appointments/{id}"))
        .await;
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");
    let r = app
        .post(
            &intruder_t,
            &format!("/api/v1/appointments/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");

    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let tried = entries(&app, &admin, &format!("actor_id={}", intruder.id)).await;
    assert_eq!(actions(&tried), ["appointment.read", "appointment.cancel"]);
    for e in &tried {
        assert_eq!(e["outcome"], "denied");
        assert_eq!(e["patient_id"], owner.id.to_string());
        assert_eq!(e["resource_id"], id);
    }
    assert_eq!(app.raw_status(id.parse().unwrap()).await.0, "booked");
}

#[actix_web::test]
async fn pages_follow_the_cursor_and_time_filters_apply() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, pt) = app.patient().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let before = chrono::Utc::now();
    for h in [9, 10, 11] {
        expect(app.book(&pt, f.doctor.id, later(h), None).await, 201).await;
    }
    let r = app
        .get(&admin, "/api/v1/audit?action=appointment.create&limit=2")
        .await;
    let page = expect(r, 200).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let next = page["next_after_seq"].as_i64().unwrap();
    let r = app
        .get(
            &admin,
            &format!("/api/v1/audit?action=appointment.create&limit=2&after_seq={next}"),
        )
        .await;
    let page = expect(r, 200).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert!(page["next_after_seq"].is_null());
    assert!(page["entries"][0]["seq"].as_i64().unwrap() > next);

    let from = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let q =
        serde_urlencoded::to_string([("action", "appointment.create"), ("from", &from)]).unwrap();
    assert_eq!(entries(&app, &admin, &q).await.len(), 3);
    let q = serde_urlencoded::to_string([("action", "appointment.create"), ("to", &from)]).unwrap();
    assert_eq!(entries(&app, &admin, &q).await.len(), 0);
}

#[actix_web::test]
async fn logins_are_recorded_by_account_id_without_personal_data() {
    let app = spawn_app().await;
    let email = format!("{}@audit.example", uuid::Uuid::new_v4().simple());
    let account = expect(app.register(&email, "password-123", "Ada Audit").await, 201).await;
    let uid = account["id"].as_str().unwrap().to_string();
    let ok = app
        .token(&[
            ("grant_type", "password"),
            ("username", &email),
            ("password", "password-123"),
        ])
        .await;
    let tokens = expect(ok, 200).await;
    let bad = app
        .token(&[
            ("grant_type", "password"),
            ("username", &email),
            ("password", "wrong-password"),
        ])
        .await;
    assert_eq!(bad.status(), 400);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_eq!(r.status(), 400, "a replayed refresh token is refused");

    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let list = not_reads_of_the_log(entries(&app, &root, &format!("patient_id={uid}")).await);
    assert_eq!(
        actions(&list),
        [
            "auth.register",
            "auth.login",
            "auth.login_failed",
            "auth.refresh"
        ]
    );
    assert_eq!(list[1]["actor_id"], uid);
    assert_eq!(list[2]["actor_role"], "anonymous");
    assert!(list[2]["actor_id"].is_null());
    assert_eq!(list[2]["outcome"], "denied");
    assert_eq!(list[2]["resource_id"], uid);
    let replay = entries(&app, &root, "action=auth.refresh_failed").await;
    assert_eq!(replay.len(), 1);
    // No e-mail, no name anywhere in the log.
    let everything = serde_json::to_string(&entries(&app, &root, "limit=1000").await).unwrap();
    assert!(!everything.contains(&email));
    assert!(!everything.contains("Ada Audit"));
}

#[actix_web::test]
async fn live_subscriptions_to_patient_data_are_recorded() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, pt) = app.patient().await;
    let (doctor_user, dt) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let mut ws = app.ws_connect(Some(&pt), false).await;
    let ack = ws
        .subscribe(json!({"type": "subscribe", "topic": "me"}))
        .await;
    assert_ne!(ack["type"], "error", "{ack}");
    let mut ws2 = app.ws_connect(Some(&dt), false).await;
    let topic = format!("provider:{}", f.doctor.id);
    let ack = ws2
        .subscribe(json!({"type": "subscribe", "topic": topic}))
        .await;
    assert_ne!(ack["type"], "error", "{ack}");

    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let subs = entries(&app, &root, "action=live.subscribe").await;
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(subs[0]["actor_id"], patient.id.to_string());
    assert_eq!(subs[0]["patient_id"], patient.id.to_string());
    assert_eq!(subs[1]["actor_id"], doctor_user.id.to_string());
    assert_eq!(subs[1]["resource_id"], f.doctor.id.to_string());
    assert_eq!(subs[1]["clinic_id"], f.clinic.to_string());
}

/// Some activity: a booking, a read and a cancellation.
async fn activity(app: &TestApp) {
    let f = app.fixture().await;
    let (_, pt) = app.patient().await;
    let booked = expect(app.book(&pt, f.doctor.id, later(9), None).await, 201).await;
    let id = booked["id"].as_str().unwrap();
    expect(
        app.get(&pt, &format!("/api/v1/appointments/{id}")).await,
        200,
    )
    .await;
    expect(
        app.post(&pt, &format!("/api/v1/appointments/{id}/cancel"), json!({}))
            .await,
        200,
    )
    .await;
    // The cancellation's record is in the outbox; the server chains it
    // within milliseconds. Chain it now so the counts below are exact.
    audit_store(app).drain().await.unwrap();
}

#[actix_web::test]
async fn a_change_and_its_audit_record_commit_together_or_not_at_all() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, pt) = app.patient().await;
    // The outbox refuses records: the booking must not commit without one.
    raw(
        &app,
        "ALTER TABLE audit_outbox ADD CONSTRAINT refuse CHECK (false) NOT VALID",
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_outbox
         BEGIN SELECT RAISE(ABORT, 'refused'); END;",
    )
    .await
    .unwrap();
    let r = app.book(&pt, f.doctor.id, later(10), None).await;
    assert_eq!(expect(r, 503).await["code"], "calendar_unavailable");
    let mine = app.get(&pt, "/api/v1/appointments").await;
    assert_eq!(expect(mine, 200).await["appointments"], json!([]));

    // Records accepted again: the same slot books, and its record reaches
    // the chain exactly once, with who, what and from where.
    raw(
        &app,
        "ALTER TABLE audit_outbox DROP CONSTRAINT refuse",
        "DROP TRIGGER refuse",
    )
    .await
    .unwrap();
    let booked = expect(app.book(&pt, f.doctor.id, later(10), None).await, 201).await;
    let store = audit_store(&app);
    store.drain().await.unwrap();
    let creates: Vec<_> = store
        .scan(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "appointment.create")
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    let e = &creates[0];
    assert_eq!(e.actor_id, Some(patient.id.0));
    assert_eq!(e.actor_role, "patient");
    assert_eq!(e.patient_id, Some(patient.id.0));
    assert_eq!(e.resource_type.as_deref(), Some("appointment"));
    assert_eq!(
        e.resource_id.map(|u| u.to_string()).as_deref(),
        booked["id"].as_str()
    );
    assert_eq!(e.clinic_id, Some(f.clinic.0));
    assert_eq!(e.client_ip.as_deref(), Some("127.0.0.1"));
    assert!(e.request_id.is_some());
    assert_eq!(store.pending().await.unwrap(), 0);
}

#[actix_web::test]
async fn requests_that_change_nothing_are_recorded_as_reads() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, pt) = app.patient().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    // The same booking sent twice at once with one Idempotency-Key: one
    // books, the other is answered with that booking (joining it in flight
    // or finding it stored) and applies nothing.
    let (r1, r2) = futures::join!(
        app.book(&pt, f.doctor.id, later(9), Some("same-key")),
        app.book(&pt, f.doctor.id, later(9), Some("same-key")),
    );
    let (b1, b2) = (expect(r1, 201).await, expect(r2, 201).await);
    assert_eq!(b1["id"], b2["id"]);
    // Confirming a hold twice: the second finds it booked already.
    let held = expect(app.hold(&pt, f.doctor.id, later(11)).await, 201).await;
    let hid = held["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let r = app
            .post(&pt, &format!("/api/v1/holds/{hid}/confirm"), json!({}))
            .await;
        expect(r, 200).await;
    }
    // Moving an appointment to where it already is.
    let booked_id = b1["id"].as_str().unwrap();
    let r = app
        .post(
            &pt,
            &format!("/api/v1/appointments/{booked_id}/reschedule"),
            json!({"start": later(9).to_rfc3339()}),
        )
        .await;
    expect(r, 200).await;

    let mine = entries(&app, &admin, &format!("actor_id={}", patient.id)).await;
    let on = |id: &str| -> Vec<&str> {
        mine.iter()
            .filter(|e| e["resource_id"] == id)
            .map(|e| e["action"].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        on(booked_id),
        ["appointment.create", "appointment.read", "appointment.read"],
        "{mine:#?}"
    );
    assert_eq!(
        on(&hid),
        [
            "appointment.hold",
            "appointment.confirm",
            "appointment.read"
        ],
        "{mine:#?}"
    );
}

#[actix_web::test]
async fn records_left_in_the_outbox_are_chained_without_a_nudge() {
    // As if a node committed a change and stopped before chaining its
    // record: the running node's sweep picks the record up.
    let app = spawn_app().await;
    let store = audit_store(&app);
    raw(
        &app,
        "INSERT INTO audit_outbox (at, actor_role, action, outcome)
         VALUES ('2026-01-02T03:04:05.000006Z', 'system', 'appointment.cancel', 'success')",
        "INSERT INTO audit_outbox (at, actor_role, action, outcome)
         VALUES (1767323045000006, 'system', 'appointment.cancel', 'success')",
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + audit::SWEEP * 5;
    let chained = loop {
        let all = store.scan(0, 10).await.unwrap();
        if !all.is_empty() || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(chained.len(), 1, "the sweep did not chain the record");
    assert_eq!(chained[0].action, "appointment.cancel");
    assert_eq!(
        chained[0].at,
        "2026-01-02T03:04:05.000006Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    assert_eq!(store.pending().await.unwrap(), 0);
    assert!(matches!(
        audit::verify(store.as_ref(), 10).await.unwrap(),
        Verdict::Ok { count: 1, .. }
    ));
}

#[actix_web::test]
async fn verify_passes_on_an_intact_chain_and_finds_an_altered_entry() {
    let app = spawn_app().await;
    let store = audit_store(&app);
    assert!(matches!(
        audit::verify(store.as_ref(), 10).await.unwrap(),
        Verdict::Ok { count: 0, .. }
    ));
    activity(&app).await;
    let all = store.scan(0, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    // Batch sizes smaller than, equal to and larger than the chain.
    for batch in [1, 2, 3, 1000] {
        assert_eq!(
            audit::verify(store.as_ref(), batch).await.unwrap(),
            Verdict::Ok {
                count: 3,
                head_hash: all[2].hash
            }
        );
    }
    // Someone able to drop the triggers changes an outcome.
    raw(
        &app,
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
         UPDATE audit_log SET outcome = 'denied' WHERE seq = 2;",
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET outcome = 'denied' WHERE seq = 2;",
    )
    .await
    .unwrap();
    match audit::verify(store.as_ref(), 2).await.unwrap() {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, 2);
            assert!(reason.contains("altered"), "{reason}");
        }
        ok => panic!("tampering went unnoticed: {ok:?}"),
    }
    // Re-hashing the altered entry moves the break to the next link.
    let mut forged = all[1].clone();
    forged.outcome = "denied".into();
    let rehashed = hex::encode(forged.compute_hash());
    raw(
        &app,
        &format!("UPDATE audit_log SET hash = decode('{rehashed}', 'hex') WHERE seq = 2;"),
        &format!("UPDATE audit_log SET hash = X'{rehashed}' WHERE seq = 2;"),
    )
    .await
    .unwrap();
    match audit::verify(store.as_ref(), 2).await.unwrap() {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, 3);
            assert!(reason.contains("prev_hash"), "{reason}");
        }
        ok => panic!("a re-hashed forgery went unnoticed: {ok:?}"),
    }
}

#[actix_web::test]
async fn verify_finds_deleted_entries_in_the_middle_and_at_the_end() {
    let app = spawn_app().await;
    let store = audit_store(&app);
    activity(&app).await;
    raw(
        &app,
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
         DELETE FROM audit_log WHERE seq = 3;",
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE seq = 3;",
    )
    .await
    .unwrap();
    match audit::verify(store.as_ref(), 10).await.unwrap() {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, 3);
            assert!(reason.contains("missing at the end"), "{reason}");
        }
        ok => panic!("a truncated chain went unnoticed: {ok:?}"),
    }
    raw(
        &app,
        "DELETE FROM audit_log WHERE seq = 1;",
        "DELETE FROM audit_log WHERE seq = 1;",
    )
    .await
    .unwrap();
    match audit::verify(store.as_ref(), 10).await.unwrap() {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, 1);
            assert!(reason.contains("missing"), "{reason}");
        }
        ok => panic!("a deleted entry went unnoticed: {ok:?}"),
    }
}

#[actix_web::test]
async fn the_database_refuses_to_change_or_remove_entries() {
    let app = spawn_app().await;
    activity(&app).await;
    let update = raw(
        &app,
        "UPDATE audit_log SET outcome = 'denied' WHERE seq = 1",
        "UPDATE audit_log SET outcome = 'denied' WHERE seq = 1",
    )
    .await;
    assert!(update.unwrap_err().contains("append-only"));
    let delete = raw(
        &app,
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
    )
    .await;
    assert!(delete.unwrap_err().contains("append-only"));
    if let TestDb::Postgres(_) = app.database {
        let truncate = raw(&app, "TRUNCATE audit_log", "").await;
        assert!(truncate.unwrap_err().contains("append-only"));
    }
    assert!(matches!(
        audit::verify(audit_store(&app).as_ref(), 10).await.unwrap(),
        Verdict::Ok { count: 3, .. }
    ));
}

#[actix_web::test]
async fn the_verify_command_reports_ok_and_exits_non_zero_on_a_break() {
    let app = spawn_app().await;
    activity(&app).await;
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_docspot"))
            .args(["audit", "verify", "--batch", "2"])
            .env("DOCSPOT_DATABASE_URL", app.database.url())
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit chain OK: 3 entries"), "{stdout}");
    raw(
        &app,
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
         UPDATE audit_log SET client_ip = '203.0.113.9' WHERE seq = 1;",
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET client_ip = '203.0.113.9' WHERE seq = 1;",
    )
    .await
    .unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BROKEN at seq 1"), "{stderr}");
}

#[actix_web::test]
async fn concurrent_requests_on_two_nodes_form_one_gapless_chain() {
    let (a, b) = spawn_two_nodes().await;
    let f = a.fixture().await;
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(a.patient().await.1);
    }
    // 20 patients race for 10 slots through both nodes, then each lists
    // their appointments twice: 60 audited requests at once.
    let slots: Vec<_> = (0..10)
        .map(|i| later(8) + Duration::minutes(30 * i))
        .collect();
    let results = join_all(tokens.iter().enumerate().flat_map(|(i, t)| {
        let node = if i % 2 == 0 { &a } else { &b };
        let slot = slots[i % slots.len()];
        [
            Box::pin(async move {
                node.book(t, f.doctor.id, slot, None)
                    .await
                    .status()
                    .as_u16()
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = u16>>>,
            Box::pin(async move { node.get(t, "/api/v1/appointments").await.status().as_u16() }),
            Box::pin(async move { node.get(t, "/api/v1/appointments").await.status().as_u16() }),
        ]
    }))
    .await;
    let booked = results.iter().filter(|s| **s == 201).count();
    assert_eq!(booked, 10);
    assert!(
        results.iter().all(|s| [200, 201, 409].contains(s)),
        "{results:?}"
    );

    let store = audit_store(&a);
    store.drain().await.unwrap();
    let all = store.scan(0, 1000).await.unwrap();
    // One entry per successful booking and per list.
    assert_eq!(all.len(), 10 + 40);
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(
        audit::verify(store.as_ref(), 7).await.unwrap(),
        Verdict::Ok {
            count: 50,
            head_hash: all[49].hash
        }
    );
    // Both nodes wrote into the one chain.
    let (_, root) = a.user(Role::ClinicAdmin, None, None).await;
    let via_b = entries(&b, &root, "action=appointment.list&limit=1000").await;
    assert_eq!(via_b.len(), 40);
}

#[actix_web::test]
async fn the_audit_endpoint_is_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let op = &doc["paths"]["/api/v1/audit"]["get"];
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "patient_id",
        "actor_id",
        "action",
        "from",
        "to",
        "after_seq",
        "limit",
    ] {
        assert!(params.contains(&p), "{p} documented: {params:?}");
    }
    assert!(op["responses"]["403"].is_object());
    assert!(doc["components"]["schemas"]["AuditEntry"].is_object());
    assert!(doc["components"]["schemas"]["AuditPage"].is_object());
}

#[actix_web::test]
async fn privacy_requests_are_recorded_by_patient_id() {
    let app = spawn_app().await;
    let (patient, pt) = app.patient().await;
    let (_, platform) = app.user(Role::ClinicAdmin, None, None).await;
    let r = app
        .client
        .put(app.url("/api/v1/me/profile"))
        .bearer_auth(&pt)
        .json(&json!({"phone": "+1 555 0100", "date_of_birth": "1980-02-29"}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    expect(app.get(&pt, "/api/v1/me/profile").await, 200).await;
    expect(app.get(&pt, "/api/v1/me/export").await, 200).await;
    let r = app
        .post(&pt, "/api/v1/me/erase", json!({"password": "password-123"}))
        .await;
    expect(r, 200).await;
    let list = entries(&app, &platform, &format!("patient_id={}", patient.id)).await;
    let got = actions(&list);
    for want in [
        "patient.update",
        "patient.read",
        "patient.export",
        "patient.erase",
    ] {
        assert!(got.contains(&want), "{want} missing from {got:?}");
    }
    // Ids only: nothing erased lives on in the log.
    let text = serde_json::to_string(&list).unwrap();
    assert!(!text.contains("555 0100") && !text.contains("1980-02-29"));
}

#[actix_web::test]
async fn behind_a_trusted_proxy_the_client_ip_is_recorded() {
    let app = spawn_app_with(Options {
        settings: Some(Arc::new(|s: &mut docspot::config::Settings| {
            s.rate_limit.trusted_proxies = vec!["127.0.0.0/8".into()];
        })),
        ..Default::default()
    })
    .await;
    let (patient, token) = app.patient().await;
    let r = app
        .client
        .get(app.url("/api/v1/me/profile"))
        .bearer_auth(&token)
        .header("X-Forwarded-For", "203.0.113.7, 198.51.100.7")
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let read = entries(
        &app,
        &root,
        &format!("action=patient.read&actor_id={}", patient.id),
    )
    .await;
    assert_eq!(read.len(), 1, "{read:?}");
    // The proxy's address is the peer; the client is the right-most
    // untrusted entry, not the client-chosen left one.
    assert_eq!(read[0]["client_ip"], "198.51.100.7");
}

#[actix_web::test]
async fn malformed_and_locked_out_logins_are_recorded() {
    let app = spawn_app_with(Options {
        settings: Some(Arc::new(|s: &mut docspot::config::Settings| {
            s.rate_limit.login_failures.max_per_account = 1;
        })),
        ..Default::default()
    })
    .await;
    let (user, _) = app.patient().await;
    let login = |name: String, password: &'static str| {
        let app = &app;
        async move {
            app.token(&[
                ("grant_type", "password"),
                ("username", &name),
                ("password", password),
            ])
            .await
        }
    };
    assert_eq!(login("not an e-mail".into(), "x").await.status(), 400);
    assert_eq!(login(user.email.clone(), "wrong").await.status(), 400);
    let locked = expect(login(user.email.clone(), "password-123").await, 429).await;
    assert_eq!(locked["code"], "too_many_failed_logins");

    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let failed = entries(&app, &root, "action=auth.login_failed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    // The malformed and the locked-out attempt name no account.
    assert!(failed[0]["resource_id"].is_null());
    assert_eq!(failed[1]["resource_id"], user.id.to_string());
    assert!(failed[2]["resource_id"].is_null());
    assert!(failed.iter().all(|e| e["outcome"] == "denied"));
}

#[actix_web::test]
async fn every_request_touching_a_patients_data_leaves_exactly_one_entry() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, pt) = app.patient().await;
    let (doctor_user, dt) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    // An admin of every clinic: a patient's own reads (profile, list) name
    // no clinic, so a one-clinic admin does not see them.
    let (_, admin) = app.user(Role::ClinicAdmin, None, None).await;
    // A visit that began an hour ago, written before the calendar loads
    // (nobody books the past), for the doctor to mark.
    let past = uuid::Uuid::now_v7();
    app.insert_raw(crate::helpers::RawAppointment {
        id: past,
        doctor: f.doctor.id.0,
        patient: patient.id.0,
        visit_type: f.visit_type.0,
        start: chrono::Utc::now() - Duration::hours(1),
        minutes: 30,
        status: "booked",
        hold_expires_at: None,
    })
    .await;
    let booked = expect(app.book(&pt, f.doctor.id, later(9), None).await, 201).await;
    let id = booked["id"].as_str().unwrap().to_string();
    let doctor = f.doctor.id;
    let put = |path: String, body: Value, token: String| {
        let r = app
            .client
            .put(app.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send();
        async move { r.await.unwrap() }
    };

    // (what the request is, who made it, the entry it must leave)
    let steps: [(&str, &str, &str); 10] = [
        ("list own appointments", "patient", "appointment.list"),
        ("history", "patient", "appointment.read"),
        ("ics download", "patient", "appointment.read"),
        ("details update", "patient", "appointment.details_update"),
        ("reschedule", "patient", "appointment.reschedule"),
        ("suggestions", "patient", "patient.read"),
        ("profile", "patient", "patient.read"),
        ("export", "patient", "patient.export"),
        ("outcome", "doctor", "appointment.outcome"),
        ("day schedule", "doctor", "doctor.day_read"),
    ];
    let mut seen =
        not_reads_of_the_log(entries(&app, &admin, &format!("patient_id={}", patient.id)).await)
            .len();
    for (what, who, action) in steps {
        let r = match what {
            "list own appointments" => app.get(&pt, "/api/v1/appointments").await,
            "history" => {
                app.get(&pt, &format!("/api/v1/appointments/{id}/history"))
                    .await
            }
            "ics download" => {
                app.get(&pt, &format!("/api/v1/appointments/{id}/ics"))
                    .await
            }
            "details update" => {
                put(
                    format!("/api/v1/appointments/{id}/details"),
                    json!({"reason": "follow-up"}),
                    pt.clone(),
                )
                .await
            }
            "reschedule" => {
                app.post(
                    &pt,
                    &format!("/api/v1/appointments/{id}/reschedule"),
                    json!({"start": later(10)}),
                )
                .await
            }
            "suggestions" => {
                app.get(&pt, &format!("/api/v1/doctors/{doctor}/suggestions"))
                    .await
            }
            "profile" => app.get(&pt, "/api/v1/me/profile").await,
            "export" => app.get(&pt, "/api/v1/me/export").await,
            "outcome" => {
                app.post(
                    &dt,
                    &format!("/api/v1/appointments/{past}/outcome"),
                    json!({"status": "completed"}),
                )
                .await
            }
            "day schedule" => app.get(&dt, &format!("/api/v1/doctors/{doctor}/day")).await,
            other => unreachable!("{other}"),
        };
        assert!(r.status().is_success(), "{what}: {}", r.status());
        // The day schedule is about the doctor's calendar, not one patient.
        let query = if what == "day schedule" {
            format!("actor_id={}", doctor_user.id)
        } else {
            format!("patient_id={}", patient.id)
        };
        let list = not_reads_of_the_log(entries(&app, &admin, &query).await);
        if what == "day schedule" {
            assert_eq!(actions(&list).last(), Some(&action), "{what}");
            continue;
        }
        assert_eq!(
            list.len(),
            seen + 1,
            "{what}: one new entry: {:?}",
            actions(&list)
        );
        let e = list.last().unwrap();
        assert_eq!(e["action"], action, "{what}");
        assert_eq!(e["actor_role"], who, "{what}");
        assert_eq!(e["outcome"], "success", "{what}");
        assert_eq!(e["client_ip"], "127.0.0.1", "{what}");
        seen = list.len();
    }
}

#[actix_web::test]
async fn erasure_keeps_the_clinics_statistics_and_the_chain_valid() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, pt) = app.patient().await;
    let (other, _) = app.patient().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    // Past visits of the patient and of someone else, some kept, some missed.
    for (days, who, status) in [
        (2, patient.id.0, "completed"),
        (3, patient.id.0, "no_show"),
        (9, patient.id.0, "completed"),
        (4, other.id.0, "completed"),
    ] {
        app.insert_raw(crate::helpers::RawAppointment {
            id: uuid::Uuid::now_v7(),
            doctor: f.doctor.id.0,
            patient: who,
            visit_type: f.visit_type.0,
            start: chrono::Utc::now() - Duration::days(days),
            minutes: 30,
            status,
            hold_expires_at: None,
        })
        .await;
    }
    expect(app.book(&pt, f.doctor.id, later(9), None).await, 201).await;
    let stats = format!("/api/v1/doctors/{}/stats?weeks=4", f.doctor.id);
    let before = expect(app.get(&admin, &stats).await, 200).await;
    assert_eq!(before["no_show_rate"], 0.25, "{before}");

    let r = app
        .post(&pt, "/api/v1/me/erase", json!({"password": "password-123"}))
        .await;
    expect(r, 200).await;

    // The clinic's past weeks read the same: nothing about who came is
    // needed for them. (Only a future visit was cancelled.)
    let after = expect(app.get(&admin, &stats).await, 200).await;
    for key in [
        "bookings_per_day",
        "completed",
        "no_show",
        "no_show_rate",
        "no_show_by_week",
        "fill_by_hour",
    ] {
        assert_eq!(before[key], after[key], "{key}");
    }
    // And the audit chain, which holds the patient's id but no data, is
    // whole and verifies.
    assert!(matches!(
        audit::verify(audit_store(&app).as_ref(), 3).await.unwrap(),
        Verdict::Ok { .. }
    ));
    // (A patient's own request names no clinic: the platform admin sees it.)
    let (_, platform) = app.user(Role::ClinicAdmin, None, None).await;
    let list = entries(&app, &platform, &format!("patient_id={}", patient.id)).await;
    assert!(
        actions(&list).contains(&"patient.erase"),
        "{:?}",
        actions(&list)
    );
}

//! A booking the server acknowledged survives `kill -9` and a restart: the
//! real `docspot` binary as a child process, on the backend under test.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration as StdDuration, Instant},
};

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::{
    Kind, Options, PG, TestDb, backend_under_test, expect, spawn_app_with, tomorrow_at,
};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    /// Never leave a server behind, even when an assertion fails.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn docspot(db_url: &str, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docspot"));
    c.env("DOCSPOT_DATABASE_URL", db_url)
        .env("DOCSPOT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DOCSPOT_AUTH__JWT_SECRET", "durability-test-secret")
        // A PostgreSQL server refuses to start without field encryption keys.
        .env(
            "DOCSPOT_SECURITY__ENCRYPTION_KEYS__TEST-A",
            crate::helpers::TEST_KEY_A.1,
        )
        .env("DOCSPOT_SECURITY__ACTIVE_ENCRYPTION_KEY", "test-a")
        .env(
            "DOCSPOT_SECURITY__BLIND_INDEX_KEY",
            crate::helpers::TEST_BLIND_INDEX_KEY,
        )
        .env("DOCSPOT_HTTP__WORKERS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

async fn start(db_url: &str) -> Server {
    let port = free_port();
    let child = docspot(db_url, port)
        .args(["serve", "--no-demo"])
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "docspot did not come up on {base}"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    Server { child, base }
}

#[actix_web::test]
async fn an_acknowledged_booking_survives_kill_9() {
    let name = format!("docspot_test_{}", uuid::Uuid::new_v4().simple());
    let db_url = match backend_under_test() {
        Kind::Postgres => format!("{PG}/{name}"),
        Kind::Sqlite => format!(
            "sqlite://{}",
            std::env::temp_dir().join(format!("{name}.db")).display()
        ),
    };
    let status = docspot(&db_url, 0)
        .args([
            "admin",
            "create",
            "--email",
            "root@durable.example",
            "--password",
            "root password",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "docspot admin create");

    let mut server = start(&db_url).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.base);
    let root = token_at(
        &http,
        &url("/api/v1/auth/token"),
        "root@durable.example",
        "root password",
    )
    .await;
    let post = |path: String, tok: String, body: Value| {
        let http = http.clone();
        async move {
            http.post(path)
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let clinic = expect(
        post(
            url("/api/v1/clinics"),
            root.clone(),
            json!({"name": "Durable", "time_zone": "UTC"}),
        )
        .await,
        201,
    )
    .await;
    let doctor = expect(
        post(
            url(&format!(
                "/api/v1/clinics/{}/doctors",
                clinic["id"].as_str().unwrap()
            )),
            root.clone(),
            json!({"name": "Dr. Durable"}),
        )
        .await,
        201,
    )
    .await;
    let did = doctor["id"].as_str().unwrap().to_string();
    expect(
        post(
            url(&format!("/api/v1/doctors/{did}/visit-types")),
            root.clone(),
            json!({"name": "Visit", "duration_minutes": 30, "is_default": true}),
        )
        .await,
        201,
    )
    .await;
    for weekday in 1..=7 {
        expect(
            post(
                url(&format!("/api/v1/doctors/{did}/rules")),
                root.clone(),
                json!({"weekday": weekday, "start_time": "08:00", "end_time": "18:00"}),
            )
            .await,
            201,
        )
        .await;
    }
    expect(
        http.post(url("/api/v1/auth/register"))
            .json(&json!({"email": "pat@durable.example", "password": "patient pw", "name": "Pat"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let pat = token_at(
        &http,
        &url("/api/v1/auth/token"),
        "pat@durable.example",
        "patient pw",
    )
    .await;
    let start_at = (Utc::now() + Duration::days(2))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    let booked = expect(
        post(
            url("/api/v1/appointments"),
            pat.clone(),
            json!({"doctor_id": did, "start": start_at.to_rfc3339()}),
        )
        .await,
        201,
    )
    .await;

    // The moment the 201 arrived, pull the plug.
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.child.wait().unwrap();

    let server = start(&db_url).await;
    let url = |p: &str| format!("{}{p}", server.base);
    let pat = token_at(
        &http,
        &url("/api/v1/auth/token"),
        "pat@durable.example",
        "patient pw",
    )
    .await;
    let got = expect(
        http.get(url(&format!(
            "/api/v1/appointments/{}",
            booked["id"].as_str().unwrap()
        )))
        .bearer_auth(&pat)
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(got["status"], "booked");
    // And the restarted calendar still refuses the slot to anyone else.
    let r = http
        .post(url("/api/v1/appointments"))
        .bearer_auth(&pat)
        .json(&json!({"doctor_id": did, "start": start_at.to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 409).await["code"], "slot_taken");
}

/// The hold cap is the database's to enforce, not each node's: a patient
/// spreading parallel holds over two server processes on one PostgreSQL gets
/// no more than the cap in all. (The nodes of `spawn_two_nodes()` share one
/// process, and so the handler's per-patient gate, which would hide a store
/// that does not count; here node B is the real binary in a process of its
/// own.)
#[actix_web::test]
async fn the_hold_cap_holds_across_server_processes() {
    let a = spawn_app_with(Options {
        backend: Some(Kind::Postgres),
        // One token for both nodes.
        settings: Some(std::sync::Arc::new(|s| {
            s.auth.jwt_secret = "durability-test-secret".to_string().into();
        })),
        ..Default::default()
    })
    .await;
    let TestDb::Postgres(name) = &a.database else {
        unreachable!("forced to PostgreSQL")
    };
    let b = start(&format!("{PG}/{name}")).await;
    let clinic = a.clinic("UTC", 60).await;
    let mut doctors = Vec::new();
    for i in 0..10 {
        let f = a
            .doctor_in(clinic, &format!("Dr. {i}"), "08:00", "18:00")
            .await;
        doctors.push(f.doctor.id);
    }
    // Several patients at once, each spreading ten parallel holds over the
    // two nodes (each patient at an hour of their own): more chances for two
    // nodes' counts to overlap, so a store that does not count fails here
    // reliably, not now and then.
    const PATIENTS: u32 = 4;
    let mut tokens = Vec::new();
    for _ in 0..PATIENTS {
        tokens.push(a.patient().await.1);
    }
    let http = reqwest::Client::new();
    let requests = tokens.iter().enumerate().flat_map(|(p, token)| {
        let start = tomorrow_at(9 + p as u32, 0).to_rfc3339();
        doctors
            .iter()
            .enumerate()
            .map(move |(i, d)| (p, i, *d, token, start.clone()))
    });
    let results = futures::future::join_all(requests.map(|(p, i, d, token, start)| {
        let body = json!({"doctor_id": d.to_string(), "start": start});
        let url = if (i + p) % 2 == 0 {
            a.url("/api/v1/holds")
        } else {
            format!("{}/api/v1/holds", b.base)
        };
        let send = http.post(url).bearer_auth(token).json(&body).send();
        async move { (p, send.await) }
    }))
    .await;
    let mut created = vec![0; PATIENTS as usize];
    for (p, r) in results {
        let r = r.unwrap();
        match r.status().as_u16() {
            201 => created[p] += 1,
            409 => assert_eq!(r.json::<Value>().await.unwrap()["code"], "too_many_holds"),
            s => panic!("unexpected status {s}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!(
        created,
        vec![3; PATIENTS as usize],
        "exactly the cap of 3 holds per patient is granted, over both nodes"
    );
    let live: Vec<i64> = a
        .pg()
        .await
        .query(
            "SELECT count(*) FROM appointments WHERE status = 'held' AND hold_expires_at > now()
             GROUP BY patient_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(live, vec![3; PATIENTS as usize]);
}

async fn token_at(http: &reqwest::Client, url: &str, email: &str, password: &str) -> String {
    let t: Value = http
        .post(url)
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

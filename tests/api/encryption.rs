//! Encryption at rest: nothing personal in the database in plaintext, login
//! through the blind index, key rotation, key configuration, and the
//! encryption of a database written before encryption existed.

use std::{net::TcpListener, path::Path, sync::Arc};

use docspot::{
    auth::hash_password,
    config::Settings,
    crypto::FieldCipher,
    domain::Email,
    privacy::rotate_keys,
    startup::{Application, open_store},
    store::postgres::{self, PgStore},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Kind, Options, PG, TEST_KEY_A, TEST_KEY_B, TestApp, TestDb, backend_under_test, expect,
    set_test_keys, spawn_app, spawn_app_with, tomorrow_at,
};

/// Signs in with the password grant; the access token.
pub async fn login(app: &TestApp, email: &str, password: &str) -> String {
    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .await;
    expect(r, 200).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The `error` of an OAuth error response (plain JSON, RFC 6749 §5.2).
pub async fn oauth_error(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    v["error"].as_str().unwrap().to_string()
}

pub async fn put(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .put(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

const ENCRYPTED: [(&str, &str, &[&str]); 3] = [
    ("users", "id", &["email_enc", "name_enc"]),
    (
        "patient_profiles",
        "user_id",
        &["phone_enc", "date_of_birth_enc"],
    ),
    (
        "appointment_details",
        "appointment_id",
        &["reason_enc", "notes_enc", "cancel_reason_enc"],
    ),
];

/// Every stored ciphertext, read raw.
async fn ciphertexts(app: &TestApp) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (table, _, cols) in ENCRYPTED {
        for col in cols {
            let sql = format!("SELECT {col} FROM {table} WHERE {col} IS NOT NULL");
            match &app.database {
                TestDb::Postgres(_) => {
                    for r in app.pg().await.query(&sql, &[]).await.unwrap() {
                        out.push(r.get::<_, Vec<u8>>(0));
                    }
                }
                TestDb::Sqlite(path) => {
                    let c = rusqlite::Connection::open(path).unwrap();
                    let mut st = c.prepare(&sql).unwrap();
                    let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
                    out.extend(rows.map(Result::unwrap));
                }
            }
        }
    }
    out
}

/// The key ids the stored ciphertexts name.
async fn key_ids(app: &TestApp) -> Vec<String> {
    ciphertexts(app)
        .await
        .iter()
        .map(|e| FieldCipher::key_id_of(e).unwrap().to_string())
        .collect()
}

/// Everything the database holds, as text: every row of every table (as
/// JSON) for PostgreSQL; the database file and its WAL, byte for byte, for
/// SQLite.
pub async fn raw_dump(app: &TestApp) -> String {
    match &app.database {
        TestDb::Postgres(_) => {
            let c = app.pg().await;
            let tables: Vec<String> = c
                .query(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(tables.iter().any(|t| t == "patient_profiles"));
            let mut dump = String::new();
            for t in tables {
                let q = format!(
                    "SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') FROM \"{t}\" t"
                );
                dump.push_str(&c.query_one(&q, &[]).await.unwrap().get::<_, String>(0));
            }
            dump
        }
        TestDb::Sqlite(path) => {
            let mut bytes = std::fs::read(path).unwrap();
            if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
                bytes.extend(wal);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// The column names of `users`.
async fn user_columns(db: &TestDb) -> Vec<String> {
    match db {
        TestDb::Postgres(name) => {
            let (c, conn) = tokio_postgres::connect(&format!("{PG}/{name}"), tokio_postgres::NoTls)
                .await
                .unwrap();
            actix_web::rt::spawn(conn);
            c.query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = 'users'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        }
        TestDb::Sqlite(path) => {
            let c = rusqlite::Connection::open(path).unwrap();
            let mut st = c
                .prepare("SELECT name FROM pragma_table_info('users')")
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
    }
}

#[actix_web::test]
async fn the_database_holds_no_plaintext_email_name_phone_visit_or_cancellation_reason() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let email = format!(
        "zelda.{}@plain.example",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    expect(
        app.register(&email, "password-123", "Zelda Plaintext")
            .await,
        201,
    )
    .await;
    let token = login(&app, &email, "password-123").await;
    let profile = json!({"phone": "+49 170 5550123", "date_of_birth": "1980-02-03"});
    expect(put(&app, &token, "/api/v1/me/profile", profile).await, 200).await;
    let a = expect(
        app.book(&token, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let path = format!("/api/v1/appointments/{}/details", a["id"].as_str().unwrap());
    let reason = json!({"reason": "Persistent chest pain since Tuesday"});
    expect(put(&app, &token, &path, reason).await, 200).await;
    let b = expect(
        app.book(&token, f.doctor.id, tomorrow_at(11, 0), None)
            .await,
        201,
    )
    .await;
    let b_id = b["id"].as_str().unwrap();
    let why = "Relocating to Reykjavik after the divorce";
    let cancelled = expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{b_id}/cancel"),
            json!({ "reason": why }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["cancel_reason"], why);

    let dump = raw_dump(&app).await;
    for secret in [
        email.as_str(),
        "Zelda Plaintext",
        "5550123",
        "1980-02-03",
        "chest pain",
        "Reykjavik",
    ] {
        assert!(!dump.contains(secret), "{secret:?} is stored in plaintext");
    }
    let columns = user_columns(&app.database).await;
    assert!(!columns.iter().any(|c| c == "email" || c == "name"));
    let kids = key_ids(&app).await;
    assert_eq!(
        kids.len(),
        6,
        "e-mail, name, phone, birth date, reason, cancellation reason"
    );
    assert!(kids.iter().all(|k| k == TEST_KEY_A.0));

    // Yet the API shows it all in plaintext.
    let me = expect(app.get(&token, "/api/v1/me/profile").await, 200).await;
    assert_eq!(me["email"], email);
    assert_eq!(me["name"], "Zelda Plaintext");
    assert_eq!(me["phone"], "+49 170 5550123");
    assert_eq!(me["date_of_birth"], "1980-02-03");
    let v = expect(
        app.get(&token, &format!("/api/v1/appointments/{b_id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(v["cancel_reason"], why);
    assert_eq!(v["details"]["cancel_reason"], why);
}

#[actix_web::test]
async fn login_finds_accounts_by_blind_index_whatever_the_case() {
    let app = spawn_app().await;
    expect(
        app.register("Mixed.Case@Example.ORG", "password-123", "M")
            .await,
        201,
    )
    .await;
    login(&app, "mixed.case@example.org", "password-123").await;
    login(&app, "MIXED.CASE@EXAMPLE.ORG", "password-123").await;
    let again = expect(
        app.register("mixed.case@example.org", "password-456", "M")
            .await,
        409,
    )
    .await;
    assert_eq!(again["code"], "email_taken");
    let wrong = app
        .token(&[
            ("grant_type", "password"),
            ("username", "other@example.org"),
            ("password", "password-123"),
        ])
        .await;
    assert_eq!(oauth_error(wrong).await, "invalid_grant");
}

#[actix_web::test]
async fn keys_rotate_reencrypts_everything_under_the_active_key_and_resumes() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let mut emails = Vec::new();
    for i in 0..3 {
        let email = format!("rot{i}.{}@example.org", Uuid::new_v4().simple());
        expect(
            app.register(&email, "password-123", &format!("Rot {i}"))
                .await,
            201,
        )
        .await;
        let token = login(&app, &email, "password-123").await;
        let profile = json!({"phone": format!("+1 555 000 {i:04}"), "date_of_birth": "1970-01-01"});
        expect(put(&app, &token, "/api/v1/me/profile", profile).await, 200).await;
        let a = expect(
            app.book(&token, f.doctor.id, tomorrow_at(9 + i, 0), None)
                .await,
            201,
        )
        .await;
        let path = format!("/api/v1/appointments/{}/details", a["id"].as_str().unwrap());
        expect(
            put(
                &app,
                &token,
                &path,
                json!({"reason": format!("reason {i}")}),
            )
            .await,
            200,
        )
        .await;
        let cancel = format!("/api/v1/appointments/{}/cancel", a["id"].as_str().unwrap());
        let why = json!({"reason": format!("cancel {i}")});
        expect(app.post(&token, &cancel, why).await, 200).await;
        emails.push(email);
    }
    let before = key_ids(&app).await;
    assert_eq!(before.len(), 3 * 6);
    assert!(before.iter().all(|k| k == TEST_KEY_A.0));

    // Keys {A, B}, B active: what the operator configures before rotating.
    let mut settings = app.state.settings.clone();
    set_test_keys(&mut settings, &[TEST_KEY_A, TEST_KEY_B], TEST_KEY_B.0);
    let store = open_store(&settings, false).await.unwrap();

    // Interrupted after two batches of two rows: some moved, some not.
    let partial = rotate_keys(store.as_ref(), 2, Some(2)).await.unwrap();
    assert!(!partial.complete);
    assert_eq!(partial.rewritten(), 3, "the 3 users, in batches of 2 and 1");
    let mid = key_ids(&app).await;
    assert!(mid.iter().any(|k| k == TEST_KEY_A.0));
    assert_eq!(mid.iter().filter(|k| *k == TEST_KEY_B.0).count(), 6);

    // Rerun: continues, and skips what is done.
    let rest = rotate_keys(store.as_ref(), 2, None).await.unwrap();
    assert!(rest.complete);
    assert_eq!(rest.rewritten(), 6, "3 profiles and 3 details left");
    let users = rest
        .tables
        .iter()
        .find(|t| t.table.table() == "users")
        .unwrap();
    assert_eq!((users.scanned, users.rewritten), (3, 0));
    assert!(key_ids(&app).await.iter().all(|k| k == TEST_KEY_B.0));
    assert_eq!(
        rotate_keys(store.as_ref(), 2, None)
            .await
            .unwrap()
            .rewritten(),
        0
    );

    // Key A can now go: a store with B alone reads everything.
    let mut only_b = app.state.settings.clone();
    set_test_keys(&mut only_b, &[TEST_KEY_B], TEST_KEY_B.0);
    let store = open_store(&only_b, false).await.unwrap();
    for (i, email) in emails.iter().enumerate() {
        let u = store
            .user_by_email(&Email::parse(email).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.email.as_str(), u.name.clone()),
            (email.as_str(), format!("Rot {i}"))
        );
        let p = store.profile(u.id).await.unwrap();
        assert_eq!(p.phone, Some(format!("+1 555 000 {i:04}")));
        let a = &store.patient_appointments(u.id).await.unwrap()[0];
        let d = store.appointment_details(a.id).await.unwrap().unwrap();
        assert_eq!(d.reason, Some(format!("reason {i}")));
        assert_eq!(d.cancel_reason, Some(format!("cancel {i}")));
    }
    // …while key A alone reads nothing any more.
    let mut only_a = app.state.settings.clone();
    set_test_keys(&mut only_a, &[TEST_KEY_A], TEST_KEY_A.0);
    let store = open_store(&only_a, false).await.unwrap();
    assert!(
        store
            .user_by_email(&Email::parse(&emails[0]).unwrap())
            .await
            .is_err()
    );
}

fn bare_settings(url: String) -> Settings {
    let mut s = Settings::load().unwrap();
    s.database_url = url.into();
    s.listen = "127.0.0.1:0".into();
    s.auth.jwt_secret = "integration-test-secret".to_string().into();
    s.calendar.threads = 1;
    s.http.workers = 1;
    s.demo.seed_on_start = Some(false);
    s.ml.model_path =
        std::env::temp_dir().join(format!("docspot_test_{}.model", Uuid::new_v4().simple()));
    s.ml.retrain_interval_secs = 0;
    s.security.encryption_keys.clear();
    s.security.active_encryption_key.clear();
    s.security.blind_index_key = String::new().into();
    s
}

#[actix_web::test]
async fn a_postgres_server_without_encryption_keys_refuses_to_start() {
    let settings = bare_settings(format!("{PG}/docspot_test_{}", Uuid::new_v4().simple()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let Err(e) = Application::from_listener(settings, listener).await else {
        panic!("started without keys");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("no encryption keys") && msg.contains("DOCSPOT_SECURITY__ENCRYPTION_KEYS"),
        "{msg}"
    );
}

#[actix_web::test]
async fn an_embedded_server_without_keys_keeps_generated_keys_beside_the_database() {
    let db = std::env::temp_dir().join(format!("docspot_test_{}.db", Uuid::new_v4().simple()));
    let start = || async {
        let settings = bare_settings(format!("sqlite://{}", db.display()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let app = Application::from_listener(settings, listener)
            .await
            .unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state();
        actix_web::rt::spawn(app.run_until_stopped(std::future::pending()));
        TestApp {
            address,
            database: TestDb::Sqlite(db.clone()),
            state,
            client: reqwest::Client::new(),
        }
    };
    let first = start().await;
    expect(
        first
            .register("keyfile@example.org", "password-123", "Kay")
            .await,
        201,
    )
    .await;
    let key_file = db.with_extension("keys");
    assert!(key_file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second server (or a restart) uses the same keys: login and reads work.
    let second = start().await;
    let token = login(&second, "keyfile@example.org", "password-123").await;
    let me = expect(second.get(&token, "/api/v1/me/profile").await, 200).await;
    assert_eq!(me["name"], "Kay");
    assert!(key_ids(&second).await.iter().all(|k| k == "k1"));
}

/// Builds a database as DocSpot before V4 left it, with these plaintext
/// accounts (e-mail, name).
async fn legacy_database(kind: Kind, users: &[(&str, &str)]) -> TestDb {
    let name = format!("docspot_test_{}", Uuid::new_v4().simple());
    let hash = hash_password("password-123").unwrap();
    match kind {
        Kind::Postgres => {
            let url = format!("{PG}/{name}");
            postgres::create_database_if_missing(&url).await.unwrap();
            postgres::migrate_to(&url, 3).await.unwrap();
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            actix_web::rt::spawn(conn);
            for (email, n) in users {
                c.execute(
                    "INSERT INTO users (id, email, password_hash, name, role)
                     VALUES ($1, $2, $3, $4, 'patient')",
                    &[&Uuid::now_v7(), email, &hash, n],
                )
                .await
                .unwrap();
            }
            TestDb::Postgres(name)
        }
        Kind::Sqlite => {
            let path = std::env::temp_dir().join(format!("{name}.db"));
            let c = rusqlite::Connection::open(&path).unwrap();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
            for v in ["V1__core", "V2__provider_alerts", "V3__suggestion_log"] {
                let sql = std::fs::read_to_string(dir.join(format!("{v}.sql"))).unwrap();
                c.execute_batch(&sql).unwrap();
            }
            c.pragma_update(None, "user_version", 3).unwrap();
            for (email, n) in users {
                c.execute(
                    "INSERT INTO users (id, email, password_hash, name, role, created_at)
                     VALUES (?1, ?2, ?3, ?4, 'patient', 0)",
                    rusqlite::params![Uuid::now_v7().to_string(), email, hash, n],
                )
                .unwrap();
            }
            TestDb::Sqlite(path)
        }
    }
}

#[actix_web::test]
async fn a_plaintext_database_is_encrypted_at_startup_and_its_plaintext_columns_dropped() {
    let users = [
        ("Legacy.One@Old.example", "Lena Legacy"),
        ("legacy.two@old.example", "Theo Legacy"),
        ("legacy.three@old.example", "Ida Legacy"),
    ];
    let db = legacy_database(backend_under_test(), &users).await;
    let app = spawn_app_with(Options {
        database: Some(db.clone()),
        ..Default::default()
    })
    .await;
    for (email, name) in users {
        let token = login(&app, &email.to_uppercase(), "password-123").await;
        let me = expect(app.get(&token, "/api/v1/me/profile").await, 200).await;
        assert_eq!(me["email"], email.to_lowercase());
        assert_eq!(me["name"], name);
    }
    let columns = user_columns(&db).await;
    assert!(
        !columns.iter().any(|c| c == "email" || c == "name"),
        "{columns:?}"
    );
    let dump = raw_dump(&app).await;
    assert!(!dump.contains("Theo Legacy") && !dump.contains("legacy.two@"));
    // Uniqueness carried over to the blind index.
    expect(
        app.register("LEGACY.TWO@old.example", "password-123", "X")
            .await,
        409,
    )
    .await;
}

#[actix_web::test]
async fn an_interrupted_plaintext_migration_resumes() {
    // PostgreSQL on purpose, whatever the suite's backend: this drives the
    // PostgreSQL store's batches directly (the SQLite store runs the same
    // step on opening, covered by the test above).
    let users = [
        ("a@old.example", "Ann"),
        ("b@old.example", "Bob"),
        ("c@old.example", "Cy"),
    ];
    let db = legacy_database(Kind::Postgres, &users).await;
    let TestDb::Postgres(name) = &db else {
        unreachable!()
    };
    let url = format!("{PG}/{name}");
    postgres::migrate_to(&url, 4).await.unwrap();
    let mut settings = Settings::load().unwrap();
    set_test_keys(&mut settings, &[TEST_KEY_A], TEST_KEY_A.0);
    let cipher = Arc::new(FieldCipher::from_settings(&settings.security, None).unwrap());
    let store = PgStore::connect(&url, 2, 1, cipher).unwrap();
    // One batch of two, then "crash".
    assert_eq!(store.encrypt_legacy_users(2, Some(1)).await.unwrap(), 2);
    assert!(user_columns(&db).await.iter().any(|c| c == "email"));
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_web::rt::spawn(conn);
    let plain: i64 = c
        .query_one("SELECT count(*) FROM users WHERE email <> ''", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 1, "the finished batch left no plaintext");
    // The server's start-up finishes the job.
    let app = spawn_app_with(Options {
        database: Some(db.clone()),
        backend: Some(Kind::Postgres),
        ..Default::default()
    })
    .await;
    assert!(!user_columns(&db).await.iter().any(|c| c == "email"));
    for (email, _) in users {
        login(&app, email, "password-123").await;
    }
}

/// `docspot keys rotate` as an operator runs it: the real binary, keys from
/// the environment, interrupted by `--max-batches` and run again.
#[actix_web::test]
async fn the_keys_rotate_command_moves_everything_to_the_new_key_across_runs() {
    let app = spawn_app().await;
    for i in 0..3 {
        let email = format!("cli{i}.{}@example.org", Uuid::new_v4().simple());
        expect(app.register(&email, "password-123", "Cli").await, 201).await;
        let token = login(&app, &email, "password-123").await;
        let profile = json!({"phone": format!("+1 555 010 {i:04}")});
        expect(put(&app, &token, "/api/v1/me/profile", profile).await, 200).await;
    }
    assert!(key_ids(&app).await.iter().all(|k| k == TEST_KEY_A.0));
    let rotate = |keys: &[(&str, &str)], args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_docspot"));
        c.args(["keys", "rotate"])
            .args(args)
            .env("DOCSPOT_DATABASE_URL", app.database.url())
            .env("DOCSPOT_AUTH__JWT_SECRET", "cli-test-secret")
            .env("DOCSPOT_SECURITY__ACTIVE_ENCRYPTION_KEY", TEST_KEY_B.0)
            .env(
                "DOCSPOT_SECURITY__BLIND_INDEX_KEY",
                crate::helpers::TEST_BLIND_INDEX_KEY,
            )
            .env("RUST_LOG", "warn");
        for (id, key) in keys {
            c.env(
                format!("DOCSPOT_SECURITY__ENCRYPTION_KEYS__{}", id.to_uppercase()),
                key,
            );
        }
        let out = c.output().expect("docspot runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stdout, stderr)
    };
    let both = [TEST_KEY_A, TEST_KEY_B];

    let (ok, out, err) = rotate(&both, &["--batch", "1", "--max-batches", "1"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("stopped after 1 batches"), "{out}");
    let mid = key_ids(&app).await;
    assert!(
        mid.iter().any(|k| k == TEST_KEY_A.0) && mid.iter().any(|k| k == TEST_KEY_B.0),
        "interrupted half-way: {mid:?}"
    );

    let (ok, out, err) = rotate(&both, &["--batch", "1"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("done: every encrypted field is under the active key"),
        "{out}"
    );
    assert!(key_ids(&app).await.iter().all(|k| k == TEST_KEY_B.0));

    // With the old key removed there is nothing left to do, and nothing
    // fails: every ciphertext opens under B alone.
    let (ok, out, err) = rotate(&[TEST_KEY_B], &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("done:"), "{out}");
}

#[actix_web::test]
async fn cancellation_reasons_from_before_v7_are_sealed_and_blanked_at_start_up() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, token) = app.patient().await;
    let a = expect(
        app.book(&token, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let id: Uuid = a["id"].as_str().unwrap().parse().unwrap();
    let cancel = format!("/api/v1/appointments/{id}/cancel");
    expect(app.post(&token, &cancel, json!({})).await, 200).await;
    // What a server before V7 left: the free text in the row and in the
    // history, and V7's list of appointments to seal.
    let why = "Legacy plaintext about my gout";
    match &app.database {
        TestDb::Postgres(_) => {
            let c = app.pg().await;
            // (Before V7 nothing kept free text out of these columns.)
            c.batch_execute(
                "ALTER TABLE appointments DROP CONSTRAINT appointments_cancel_reason_is_a_code;
                 ALTER TABLE appointment_history
                     DROP CONSTRAINT appointment_history_cancel_note_is_a_code;",
            )
            .await
            .unwrap();
            c.batch_execute(&format!(
                "UPDATE appointments SET cancel_reason = '{why}' WHERE id = '{id}';
                 INSERT INTO appointment_history (appointment_id, action, from_status, to_status, to_start, note)
                 SELECT id, 'cancel', 'booked', 'cancelled', starts_at, '{why}'
                 FROM appointments WHERE id = '{id}';
                 CREATE TABLE legacy_cancel_reasons (appointment_id uuid PRIMARY KEY);
                 INSERT INTO legacy_cancel_reasons VALUES ('{id}');"
            ))
            .await
            .unwrap();
            // …and then V7 itself: its checks (not yet valid) and its
            // passing exception to the append-only history, both of which
            // this database's own start-up pass already settled.
            let v7 = include_str!("../../migrations/postgres/V7__cancel_reason_encrypted.sql");
            let checks = &v7[v7.find("ALTER TABLE appointments ADD CONSTRAINT").unwrap()
                ..v7.find("-- The calendar file").unwrap()];
            let exception = &v7[v7.find("CREATE OR REPLACE FUNCTION").unwrap()..];
            c.batch_execute(checks).await.unwrap();
            c.batch_execute(exception).await.unwrap();
            // The checks keep any new free text out from now on.
            let refused = c
                .batch_execute(&format!(
                    "UPDATE appointments SET cancel_reason = 'more free text' WHERE id = '{id}'"
                ))
                .await;
            assert!(refused.is_err(), "only codes go into cancel_reason");
        }
        TestDb::Sqlite(path) => {
            let c = rusqlite::Connection::open(path).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            c.execute_batch(&format!(
                "UPDATE appointments SET cancel_reason = '{why}' WHERE id = '{id}';
                 INSERT INTO appointment_history (appointment_id, action, from_status, to_status, to_start, note)
                 SELECT id, 'cancel', 'booked', 'cancelled', starts_at, '{why}'
                 FROM appointments WHERE id = '{id}';
                 CREATE TABLE legacy_cancel_reasons (appointment_id TEXT PRIMARY KEY NOT NULL) STRICT;
                 INSERT INTO legacy_cancel_reasons VALUES ('{id}');"
            ))
            .unwrap();
        }
    }
    assert!(raw_dump(&app).await.contains("gout"));

    // A node starting on the database seals it.
    let node = spawn_app_with(Options {
        database: Some(app.database.clone()),
        ..Default::default()
    })
    .await;
    assert!(!raw_dump(&node).await.contains("gout"));
    let v = expect(
        node.get(&token, &format!("/api/v1/appointments/{id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(v["details"]["cancel_reason"], why);
    let h = expect(
        node.get(&token, &format!("/api/v1/appointments/{id}/history"))
            .await,
        200,
    )
    .await;
    assert!(
        h["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["note"] == "")
    );
    // The history is append-only again, even with the pass's switch on: its
    // exception went with the list.
    let refused = match &app.database {
        TestDb::Postgres(_) => app
            .pg()
            .await
            .batch_execute(
                "BEGIN; SET LOCAL docspot.blank_history_notes = 'on';
                 UPDATE appointment_history SET note = ''; COMMIT;",
            )
            .await
            .is_err(),
        TestDb::Sqlite(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch("UPDATE appointment_history SET note = ''")
            .is_err(),
    };
    assert!(refused, "the history must stay append-only");
}

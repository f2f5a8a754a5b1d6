//! Suggested times: earliest-first without a model, ranked by a model trained
//! from the database, and never a slot that was just taken.

use chrono::{Duration, Utc};
use docspot::suggest::{Suggester, train};
use serde_json::Value;

use crate::helpers::{expect, spawn_app, tomorrow_at};

#[actix_web::test]
async fn suggestions_rank_live_free_slots_with_the_trained_model() {
    let app = spawn_app().await;
    let store = app.state.store.as_ref();
    docspot::demo::seed(store, 4000).await.unwrap();
    let doctors = store.doctors(None, None).await.unwrap();
    let doctor = &doctors[0];
    let t = app
        .token(&[
            ("grant_type", "password"),
            ("username", "patient1@demo.docspot.test"),
            ("password", docspot::demo::DEMO_PASSWORD),
        ])
        .await;
    let token = expect(t, 200).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/doctors/{}/suggestions?limit=5", doctor.id);

    // No model yet: earliest first, and the response says so.
    let v = expect(app.get(&token, &path).await, 200).await;
    assert_eq!(v["ranking"], "earliest_first");
    assert!(v["note"].as_str().unwrap().contains("docspot train"));
    let list = v["suggestions"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    let starts: Vec<&str> = list.iter().map(|s| s["start"].as_str().unwrap()).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);

    // Train from the database (as `docspot train` does) and install.
    let model_path =
        std::env::temp_dir().join(format!("docspot-test-{}.model", uuid::Uuid::new_v4()));
    let suggester = Suggester::load(&model_path);
    let report = train(store, &suggester, 200_000, 500).await.unwrap();
    assert!(report.installed);
    assert!(report.rows >= 3000, "{report:?}");
    assert!(report.candidate.roc_auc.unwrap() > 0.5, "{report:?}");
    // A second run keeps or replaces the model only when no worse.
    let again = train(store, &suggester, 200_000, 500).await.unwrap();
    assert!(again.current.is_some());
    // The server picks up a model file at start: swap it in like a restart.
    app.state
        .suggester
        .install(docspot_ml::Model::from_bytes(&std::fs::read(&model_path).unwrap()).unwrap())
        .unwrap();

    let v = expect(app.get(&token, &path).await, 200).await;
    assert_eq!(v["ranking"], "model");
    let list = v["suggestions"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    let scores: Vec<f64> = list.iter().map(|s| s["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    assert!(list.iter().all(|s| {
        s["show_probability"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p))
    }));
    assert!(
        list.iter()
            .any(|s| !s["reasons"].as_array().unwrap().is_empty()),
        "{v}"
    );

    // Book the top suggestion as someone else: it is never suggested again.
    let top = list[0]["start"].as_str().unwrap().parse().unwrap();
    let (_, other) = app.patient().await;
    expect(app.book(&other, doctor.id, top, None).await, 201).await;
    let v = expect(app.get(&token, &path).await, 200).await;
    assert!(v["suggestions"].as_array().unwrap().iter().all(|s| {
        s["start"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
            != top
    }));
    std::fs::remove_file(model_path).ok();
}

#[actix_web::test]
async fn suggestions_need_sign_in_and_valid_input() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, token) = app.patient().await;
    let r = app
        .client
        .get(app.url(&format!("/api/v1/doctors/{}/suggestions", f.doctor.id)))
        .send()
        .await
        .unwrap();
    expect(r, 401).await;
    let bad = |q: &str| format!("/api/v1/doctors/{}/suggestions?{q}", f.doctor.id);
    assert_eq!(
        expect(app.get(&token, &bad("limit=0")).await, 422).await["code"],
        "invalid_limit"
    );
    assert_eq!(
        expect(app.get(&token, &bad("from=soon")).await, 422).await["code"],
        "invalid_time"
    );
    let z = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let far = z(Utc::now() + Duration::days(400));
    assert_eq!(
        expect(app.get(&token, &bad(&format!("to={far}"))).await, 422).await["code"],
        "range_too_long"
    );
    let v: Value = expect(
        app.get(&token, &bad(&format!("from={}", z(tomorrow_at(0, 0)))))
            .await,
        200,
    )
    .await;
    assert_eq!(
        v["suggestions"][0]["start"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        tomorrow_at(8, 0)
    );
}

#[actix_web::test]
async fn a_corrupt_model_file_falls_back_to_earliest_first() {
    let path = std::env::temp_dir().join(format!("docspot-test-{}.model", uuid::Uuid::new_v4()));
    std::fs::write(&path, b"definitely not a model").unwrap();
    let s = Suggester::load(&path);
    assert!(
        s.current().is_none(),
        "unusable files are ignored, not fatal"
    );
    std::fs::remove_file(path).ok();
}

#[actix_web::test]
async fn ml_evaluate_reads_a_csv_and_reports_json() {
    let rows = docspot_ml::synthetic::generate(300, 4000, 5, Utc::now());
    let mut csv = Vec::new();
    docspot_ml::write_csv(&rows, &mut csv).unwrap();
    // One unparseable row is counted, not fatal.
    csv.extend_from_slice(b"p1,not-a-date,2026-01-01,yes\n");
    let path = std::env::temp_dir().join(format!(
        "docspot_test_{}.csv",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, csv).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_docspot"))
        .args(["ml", "evaluate", "--json", "--csv"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "rows_used",
        "rows_skipped",
        "no_show_rate",
        "roc_auc",
        "brier",
        "baseline_roc_auc",
    ] {
        assert!(!v[key].is_null(), "{key} in {v}");
    }
    assert_eq!(v["rows_used"], 4000);
    assert_eq!(v["rows_skipped"], 1);
    assert!(v["roc_auc"].as_f64().unwrap() > v["baseline_roc_auc"].as_f64().unwrap());
}

#[actix_web::test]
async fn shown_suggestions_become_the_offered_alternatives_of_the_visit() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (ann, token) = app.patient().await;
    let path = format!("/api/v1/doctors/{}/suggestions?limit=4", f.doctor.id);
    let v = expect(app.get(&token, &path).await, 200).await;
    let shown: Vec<chrono::DateTime<Utc>> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(shown.len(), 4);
    // A visit booked right after (written as completed: training only
    // learns from visits with an outcome).
    app.insert_raw(crate::helpers::RawAppointment {
        id: uuid::Uuid::now_v7(),
        doctor: f.doctor.id.0,
        patient: ann.id.0,
        visit_type: f.visit_type.0,
        start: Utc::now() - Duration::hours(2),
        minutes: 30,
        status: "completed",
        hold_expires_at: None,
    })
    .await;
    let past = app.state.store.past_outcomes(100).await.unwrap();
    assert_eq!(past.len(), 1);
    assert_eq!(
        past[0].offered, shown,
        "the slots shown are the alternatives offered"
    );
    let row = docspot::suggest::past_visit(&past[0]);
    assert_eq!(row.offered, shown);
}

#[actix_web::test]
async fn the_model_beats_the_baselines_on_docspots_own_exported_history() {
    let app = spawn_app().await;
    let store = app.state.store.as_ref();
    docspot::demo::seed(store, 6000).await.unwrap();
    // What `docspot ml export` writes, evaluated as `docspot ml evaluate` does.
    let rows: Vec<_> = store
        .past_outcomes(200_000)
        .await
        .unwrap()
        .iter()
        .filter(|v| docspot::suggest::has_outcome(&v.appointment))
        .map(docspot::suggest::past_visit)
        .collect();
    assert_eq!(rows.len(), 6000);
    assert!(
        rows.iter().all(|r| r.offered.len() == 5),
        "every visit knows what was offered"
    );
    let r = docspot_ml::evaluate(&rows, &docspot_ml::TrainOptions::default()).unwrap();
    let (hit, earliest, popular) = (
        r.hit_at_3.unwrap(),
        r.earliest_hit_at_3.unwrap(),
        r.popularity_hit_at_3.unwrap(),
    );
    assert!(hit > earliest + 0.1 && hit > popular + 0.1, "{r:?}");
    assert!(
        r.ndcg_at_5.unwrap() > r.earliest_ndcg_at_5.unwrap() + 0.05,
        "{r:?}"
    );
    assert!(r.roc_auc > r.baseline_roc_auc + 0.02, "{r:?}");
}

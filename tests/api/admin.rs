use chrono::{Duration, Utc};
use docspot::{domain::Role, store::Store};
use serde_json::json;

use crate::helpers::{expect, spawn_app, tomorrow_at};

#[actix_web::test]
async fn an_admin_sets_up_a_clinic_and_its_doctors_can_be_booked() {
    let app = spawn_app().await;
    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let (_, patient) = app.patient().await;

    let r = app
        .post(&root, "/api/v1/clinics", json!({"name": "Harbour Clinic", "time_zone": "Europe/Berlin", "latitude": 53.55, "longitude": 9.99, "cancellation_cutoff_minutes": 120}))
        .await;
    let clinic = expect(r, 201).await;
    let cid = clinic["id"].as_str().unwrap();
    assert_eq!(clinic["booking_horizon_days"], 60);
    let r = app
        .post(
            &root,
            "/api/v1/clinics",
            json!({"name": "Bad", "time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_time_zone");
    let r = app
        .post(
            &patient,
            "/api/v1/clinics",
            json!({"name": "Mine", "time_zone": "UTC"}),
        )
        .await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");

    let r = app
        .post(
            &root,
            &format!("/api/v1/clinics/{cid}/doctors"),
            json!({"name": "Dr. Neu", "specialties": ["Cardiology"], "languages": ["de"]}),
        )
        .await;
    let doctor = expect(r, 201).await;
    let did = doctor["id"].as_str().unwrap();
    assert_eq!(doctor["time_zone"], "Europe/Berlin");

    // No visit type yet: slots cannot be computed.
    let from = tomorrow_at(0, 0);
    let r = app
        .client
        .get(app.url(&format!("/api/v1/doctors/{did}/slots")))
        .query(&[
            ("from", from.to_rfc3339()),
            ("to", (from + Duration::days(1)).to_rfc3339()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 422).await["code"], "unknown_visit_type");

    let r = app
        .post(&root, &format!("/api/v1/doctors/{did}/visit-types"), json!({"name": "Check-up", "duration_minutes": 45, "buffer_after_minutes": 15, "fee_cents": 9000, "currency": "eur", "is_default": true}))
        .await;
    assert_eq!(expect(r, 201).await["currency"], "EUR");
    let r = app
        .post(
            &root,
            &format!("/api/v1/doctors/{did}/visit-types"),
            json!({"name": "X", "duration_minutes": 1}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_visit_type");

    let weekday = (Utc::now() + Duration::days(1))
        .date_naive()
        .format("%u")
        .to_string()
        .parse::<i16>()
        .unwrap();
    let r = app
        .post(
            &root,
            &format!("/api/v1/doctors/{did}/rules"),
            json!({"weekday": weekday, "start_time": "09:00", "end_time": "12:00"}),
        )
        .await;
    let rule = expect(r, 201).await;
    let r = app
        .post(
            &root,
            &format!("/api/v1/doctors/{did}/rules"),
            json!({"weekday": 8, "start_time": "09:00", "end_time": "12:00"}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_input");
    let r = app
        .post(
            &root,
            &format!("/api/v1/doctors/{did}/rules"),
            json!({"weekday": 1, "start_time": "9am", "end_time": "12:00"}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_time");

    // 09:00–12:00 Berlin with 45+15 minute blocks: three slots.
    let slots = app
        .slots(did, from - Duration::hours(2), from + Duration::days(1))
        .await;
    assert_eq!(slots.len(), 3, "{slots:?}");

    // Time off removes one; the calendar picks the change up at once.
    let r = app
        .post(&root, &format!("/api/v1/doctors/{did}/exceptions"), json!({"kind": "time_off", "start": slots[1].to_rfc3339(), "end": (slots[1] + Duration::hours(1)).to_rfc3339(), "reason": "training"}))
        .await;
    let exc = expect(r, 201).await;
    let after = app
        .slots(did, from - Duration::hours(2), from + Duration::days(1))
        .await;
    assert_eq!(after, vec![slots[0], slots[2]]);
    let r = app
        .client
        .delete(app.url(&format!(
            "/api/v1/doctors/{did}/exceptions/{}",
            exc["id"].as_str().unwrap()
        )))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.slots(did, from - Duration::hours(2), from + Duration::days(1))
            .await
            .len(),
        3
    );

    // A doctor login sees its own calendar.
    let r = app
        .post(&root, &format!("/api/v1/doctors/{did}/account"), json!({"email": "neu@harbour.example", "password": "doctor password", "name": "Dr. Neu"}))
        .await;
    assert_eq!(expect(r, 201).await["role"], "doctor");
    let t = expect(
        app.token(&[
            ("grant_type", "password"),
            ("username", "neu@harbour.example"),
            ("password", "doctor password"),
        ])
        .await,
        200,
    )
    .await;
    let doc_t = t["access_token"].as_str().unwrap().to_string();
    expect(app.book(&patient, did, slots[0], None).await, 201).await;
    let cal = expect(app.get(&doc_t, "/api/v1/appointments").await, 200).await;
    assert_eq!(cal["appointments"].as_array().unwrap().len(), 1);

    // Removing the rule empties the calendar's offer.
    let r = app
        .client
        .delete(app.url(&format!(
            "/api/v1/doctors/{did}/rules/{}",
            rule["id"].as_str().unwrap()
        )))
        .bearer_auth(&doc_t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        app.slots(did, from - Duration::hours(2), from + Duration::days(1))
            .await
            .is_empty()
    );

    // Listing and filters.
    let list = expect(
        app.client
            .get(app.url("/api/v1/doctors?specialty=cardiology"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(list["doctors"].as_array().unwrap().len(), 1);
    let list = expect(
        app.client
            .get(app.url("/api/v1/doctors?specialty=dermatology"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(list["doctors"], json!([]));
    let list = expect(
        app.client
            .get(app.url(&format!("/api/v1/doctors?clinic={cid}")))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(list["doctors"][0]["name"], "Dr. Neu");

    // A clinic admin of another clinic cannot touch this one.
    let other = app.clinic("UTC", 0).await;
    let (_, other_admin) = app.user(Role::ClinicAdmin, None, Some(other)).await;
    let r = app
        .post(
            &other_admin,
            &format!("/api/v1/clinics/{cid}/doctors"),
            json!({"name": "Intruder"}),
        )
        .await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");
    let r = app
        .post(
            &other_admin,
            &format!("/api/v1/doctors/{did}/rules"),
            json!({"weekday": 1, "start_time": "09:00", "end_time": "10:00"}),
        )
        .await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");
}

#[actix_web::test]
async fn the_demo_clinic_is_seeded_with_history_and_open_slots() {
    let app = spawn_app().await;
    let store: &dyn Store = app.state.store.as_ref();
    let report = docspot::demo::seed(store, 3000).await.unwrap();
    assert!(report.doctors >= 5);
    assert_eq!(report.past_appointments, 3000);
    let again = docspot::demo::seed(store, 3000).await.unwrap();
    assert!(again.already_seeded, "seeding twice is a no-op");

    let doctors = store.doctors(None, None).await.unwrap();
    let specialties: std::collections::HashSet<_> =
        doctors.iter().flat_map(|d| d.specialties.clone()).collect();
    assert!(specialties.len() >= 5);
    let from = Utc::now();
    let mut open = 0;
    for d in &doctors {
        open += app.slots(d.id, from, from + Duration::days(14)).await.len();
    }
    assert!(open > 200, "two weeks of availability: {open}");
    let t = expect(
        app.token(&[
            ("grant_type", "password"),
            ("username", "patient1@demo.docspot.test"),
            ("password", docspot::demo::DEMO_PASSWORD),
        ])
        .await,
        200,
    )
    .await;
    assert!(t["access_token"].is_string());
}

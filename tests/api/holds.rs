use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::helpers::{Options, RawAppointment, expect, spawn_app, spawn_app_with, tomorrow_at};

#[actix_web::test]
async fn a_hold_blocks_others_then_expires_by_itself() {
    let app = spawn_app_with(Options {
        hold_ttl_secs: 1,
        ..Default::default()
    })
    .await;
    let f = app.fixture().await;
    let (_, ann_t) = app.patient().await;
    let (_, bob_t) = app.patient().await;
    let at = tomorrow_at(9, 0);

    let h = expect(app.hold(&ann_t, f.doctor.id, at).await, 201).await;
    assert_eq!(h["status"], "held");
    let expires: DateTime<Utc> = h["hold_expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > Utc::now() && expires <= Utc::now() + Duration::seconds(2));
    assert_eq!(
        expect(app.book(&bob_t, f.doctor.id, at, None).await, 409).await["code"],
        "slot_taken"
    );

    tokio::time::sleep(StdDuration::from_millis(1800)).await;
    // The actor's timer released it: the slot is offered and bookable again.
    assert!(
        app.slots(f.doctor.id, at, at + Duration::hours(1))
            .await
            .contains(&at)
    );
    expect(app.book(&bob_t, f.doctor.id, at, None).await, 201).await;
    // Confirming the lapsed hold fails clearly.
    let r = app
        .post(
            &ann_t,
            &format!("/api/v1/holds/{}/confirm", h["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "invalid_transition");
    let hist = expect(
        app.get(
            &ann_t,
            &format!("/api/v1/appointments/{}/history", h["id"].as_str().unwrap()),
        )
        .await,
        200,
    )
    .await;
    let actions: Vec<&str> = hist["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["hold", "expire"]);
}

#[actix_web::test]
async fn holds_confirm_into_bookings_and_can_be_released() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann_t) = app.patient().await;
    let (_, bob_t) = app.patient().await;
    let at = tomorrow_at(11, 0);

    let h = expect(app.hold(&ann_t, f.doctor.id, at).await, 201).await;
    let id = h["id"].as_str().unwrap();
    // Only the holder may confirm.
    let r = app
        .post(&bob_t, &format!("/api/v1/holds/{id}/confirm"), json!({}))
        .await;
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");
    // Confirm through the public booking contract (hold_id).
    let r = app
        .post(
            &ann_t,
            "/api/v1/appointments",
            json!({"doctor_id": f.doctor.id.to_string(), "start": at.to_rfc3339(), "hold_id": id}),
        )
        .await;
    let b = expect(r, 201).await;
    assert_eq!(b["id"], h["id"]);
    assert_eq!(b["status"], "booked");
    assert!(b.get("hold_expires_at").is_none());

    // A second hold, released by its holder, frees the slot at once.
    let at2 = tomorrow_at(12, 0);
    let h2 = expect(app.hold(&ann_t, f.doctor.id, at2).await, 201).await;
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/holds/{}", h2["id"].as_str().unwrap())))
        .bearer_auth(&ann_t)
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["status"], "cancelled");
    expect(app.book(&bob_t, f.doctor.id, at2, None).await, 201).await;

    // A hold for another time cannot be confirmed as this one.
    let at3 = tomorrow_at(13, 0);
    let h3 = expect(app.hold(&ann_t, f.doctor.id, at3).await, 201).await;
    let r = app
        .post(&ann_t, "/api/v1/appointments", json!({"doctor_id": f.doctor.id.to_string(), "start": at2.to_rfc3339(), "hold_id": h3["id"]}))
        .await;
    assert_eq!(expect(r, 422).await["code"], "hold_mismatch");
    let r = app
        .post(
            &ann_t,
            &format!("/api/v1/holds/{}/confirm", h3["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(expect(r, 200).await["status"], "booked");
}

#[actix_web::test]
async fn holds_left_by_a_crashed_node_are_swept_at_start_up() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (ann, _) = app.patient().await;
    let at = tomorrow_at(14, 0);
    // A hold whose node died before it expired it.
    let id = uuid::Uuid::now_v7();
    app.insert_raw(RawAppointment {
        id,
        doctor: f.doctor.id.0,
        patient: ann.id.0,
        visit_type: f.visit_type.0,
        start: at,
        minutes: 30,
        status: "held",
        hold_expires_at: Some(Utc::now() - Duration::minutes(1)),
    })
    .await;
    // A node (re)starting on this database cancels it.
    let _restarted = spawn_app_with(Options {
        database: Some(app.database.clone()),
        ..Default::default()
    })
    .await;
    let (status, reason) = app.raw_status(id).await;
    assert_eq!(status, "cancelled");
    assert_eq!(reason.as_deref(), Some("hold_expired"));
}

#[actix_web::test]
async fn a_patient_cannot_hoard_holds() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann_t) = app.patient().await;
    let mut ids = Vec::new();
    for h in [9, 10, 11] {
        let v = expect(app.hold(&ann_t, f.doctor.id, tomorrow_at(h, 0)).await, 201).await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let r = app.hold(&ann_t, f.doctor.id, tomorrow_at(12, 0)).await;
    assert_eq!(expect(r, 409).await["code"], "too_many_holds");
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/holds/{}", ids[0])))
        .bearer_auth(&ann_t)
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    expect(app.hold(&ann_t, f.doctor.id, tomorrow_at(12, 0)).await, 201).await;
}

#[actix_web::test]
async fn parallel_holds_to_many_doctors_never_exceed_the_cap() {
    // Each doctor's actor decides alone, so without the per-patient gate ten
    // simultaneous holds at ten doctors would all count zero and succeed.
    let app = spawn_app().await;
    let clinic = app.clinic("UTC", 1440).await;
    let mut doctors = Vec::new();
    for i in 0..10 {
        let f = app
            .doctor_in(clinic, &format!("Dr. {i}"), "08:00", "18:00")
            .await;
        doctors.push(f.doctor.id);
    }
    let (_, token) = app.patient().await;
    let results = futures::future::join_all(
        doctors
            .iter()
            .map(|d| app.hold(&token, *d, tomorrow_at(9, 0))),
    )
    .await;
    let mut created = 0;
    for r in results {
        match r.status().as_u16() {
            201 => created += 1,
            409 => assert_eq!(
                r.json::<serde_json::Value>().await.unwrap()["code"],
                "too_many_holds"
            ),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(created, 3, "exactly the cap of 3 holds is granted");
}

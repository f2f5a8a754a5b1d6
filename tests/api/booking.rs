use chrono::{DateTime, Duration, Utc};
use docspot::domain::Role;
use serde_json::json;

use crate::helpers::{RawAppointment, expect, spawn_app, tomorrow_at};

#[actix_web::test]
async fn slots_are_free_ones_and_queries_are_validated() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let from = tomorrow_at(0, 0);
    let slots = app.slots(f.doctor.id, from, from + Duration::days(1)).await;
    assert_eq!(slots.len(), 20, "08:00–18:00 in 30-minute visits");
    assert_eq!(slots[0], tomorrow_at(8, 0));

    let (_, token) = app.patient().await;
    expect(
        app.book(&token, f.doctor.id, tomorrow_at(8, 0), None).await,
        201,
    )
    .await;
    let after = app.slots(f.doctor.id, from, from + Duration::days(1)).await;
    assert_eq!(after.len(), 19);
    assert!(
        !after.contains(&tomorrow_at(8, 0)),
        "a booked slot is no longer offered"
    );

    let base = format!("/api/v1/doctors/{}/slots", f.doctor.id);
    let get = |q: String| {
        let app = &app;
        let url = app.url(&format!("{base}{q}"));
        async move { app.client.get(url).send().await.unwrap() }
    };
    assert_eq!(
        expect(get(String::new()).await, 422).await["code"],
        "missing_range"
    );
    assert_eq!(
        expect(
            get("?from=yesterday&to=2030-01-01T00:00:00Z".into()).await,
            422
        )
        .await["code"],
        "invalid_time"
    );
    assert_eq!(
        expect(
            get("?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z".into()).await,
            422
        )
        .await["code"],
        "invalid_range"
    );
    assert_eq!(
        expect(
            get("?from=2030-01-01T00:00:00Z&to=2031-01-01T00:00:00Z".into()).await,
            422
        )
        .await["code"],
        "range_too_long"
    );
    let r = app
        .client
        .get(app.url(
            "/api/v1/doctors/not-a-uuid/slots?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 404).await["code"], "doctor_not_found");
    let r = app
        .client
        .get(app.url(&format!(
            "/api/v1/doctors/{}/slots?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z",
            uuid::Uuid::new_v4()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 404).await["code"], "doctor_not_found");
}

#[actix_web::test]
async fn booking_conflict_idempotency_and_bad_starts() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (ann, ann_t) = app.patient().await;
    let (_, bob_t) = app.patient().await;
    let at = tomorrow_at(10, 0);

    let a = expect(app.book(&ann_t, f.doctor.id, at, Some("key-1")).await, 201).await;
    assert_eq!(a["status"], "booked");
    assert_eq!(a["doctor_id"], f.doctor.id.to_string());
    assert_eq!(a["patient_id"], ann.id.to_string());
    assert_eq!(
        a["start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at
    );
    assert_eq!(
        a["end"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(),
        at + Duration::minutes(30)
    );

    // A retry with the same key returns the same appointment, never a second.
    let again = expect(app.book(&ann_t, f.doctor.id, at, Some("key-1")).await, 201).await;
    assert_eq!(again["id"], a["id"]);
    // The same key for another request is refused.
    let r = app
        .book(&ann_t, f.doctor.id, tomorrow_at(11, 0), Some("key-1"))
        .await;
    assert_eq!(expect(r, 422).await["code"], "idempotency_key_reused");

    // Someone else: 409 with the nearest free alternatives.
    let p = expect(app.book(&bob_t, f.doctor.id, at, None).await, 409).await;
    assert_eq!(p["code"], "slot_taken");
    assert_eq!(p["type"], "/problems/slot_taken");
    let alts: Vec<DateTime<Utc>> = p["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        alts,
        vec![tomorrow_at(9, 30), tomorrow_at(10, 30), tomorrow_at(9, 0)]
    );
    assert_eq!(app.active_rows(f.doctor.id).await, 1);

    // Off the grid, outside hours, in the past: not offered.
    for start in [
        tomorrow_at(10, 10),
        tomorrow_at(19, 0),
        Utc::now() - Duration::days(1),
    ] {
        let r = app.book(&bob_t, f.doctor.id, start, None).await;
        assert_eq!(expect(r, 422).await["code"], "slot_not_offered", "{start}");
    }
    // Bad input.
    let r = app
        .post(
            &bob_t,
            "/api/v1/appointments",
            json!({"doctor_id": "x", "start": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_input");
    let r = app
        .post(
            &bob_t,
            "/api/v1/appointments",
            json!({"doctor_id": f.doctor.id.to_string(), "start": "noon"}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_time");
    let r = app
        .post(
            &bob_t,
            "/api/v1/appointments",
            json!({"start": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(expect(r, 400).await["code"], "invalid_json");
    let r = app
        .post(
            &bob_t,
            "/api/v1/appointments",
            json!({"doctor_id": uuid::Uuid::new_v4().to_string(), "start": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(expect(r, 404).await["code"], "doctor_not_found");
    let r = app
        .post(
            &bob_t,
            "/api/v1/appointments",
            json!({"doctor_id": f.doctor.id.to_string(), "start": at.to_rfc3339(), "visit_type_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "unknown_visit_type");

    // Listing: own appointments only, newest first.
    expect(
        app.book(&ann_t, f.doctor.id, tomorrow_at(15, 0), None)
            .await,
        201,
    )
    .await;
    let list = expect(app.get(&ann_t, "/api/v1/appointments").await, 200).await;
    let starts: Vec<&str> = list["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["start"].as_str().unwrap())
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(starts[0] > starts[1], "newest first: {starts:?}");
    let list = expect(app.get(&bob_t, "/api/v1/appointments").await, 200).await;
    assert_eq!(list["appointments"], json!([]));
}

#[actix_web::test]
async fn reschedule_is_atomic_and_cancel_respects_the_cutoff() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann_t) = app.patient().await;
    let (_, bob_t) = app.patient().await;
    // Days ahead, well beyond the fixture's cut-off: the patient may change it.
    let day = Utc::now().date_naive() + Duration::days(3);
    let at = |h: u32| day.and_hms_opt(h, 0, 0).unwrap().and_utc();

    let a = expect(app.book(&ann_t, f.doctor.id, at(9), None).await, 201).await;
    let id = a["id"].as_str().unwrap().to_string();
    expect(app.book(&bob_t, f.doctor.id, at(10), None).await, 201).await;

    // Onto Bob's time: refused, and Ann's appointment is untouched.
    let r = app
        .post(
            &ann_t,
            &format!("/api/v1/appointments/{id}/reschedule"),
            json!({"start": at(10).to_rfc3339()}),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "slot_taken");
    let still = expect(
        app.get(&ann_t, &format!("/api/v1/appointments/{id}")).await,
        200,
    )
    .await;
    assert_eq!(
        still["start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at(9)
    );

    // To a free time: moved, and the old time is free again.
    let moved = expect(
        app.post(
            &ann_t,
            &format!("/api/v1/appointments/{id}/reschedule"),
            json!({"start": at(11).to_rfc3339()}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(moved["id"], a["id"]);
    assert_eq!(
        moved["start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at(11)
    );
    let free = app.slots(f.doctor.id, at(0), at(23)).await;
    assert!(free.contains(&at(9)) && !free.contains(&at(11)));
    assert_eq!(app.active_rows(f.doctor.id).await, 2);

    // History records every step.
    let h = expect(
        app.get(&ann_t, &format!("/api/v1/appointments/{id}/history"))
            .await,
        200,
    )
    .await;
    let actions: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["book", "reschedule"]);

    // Cancel frees the slot; cancelling twice is an invalid transition.
    let c = expect(
        app.post(
            &ann_t,
            &format!("/api/v1/appointments/{id}/cancel"),
            json!({"reason": "feeling better"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["cancel_reason"], "feeling better");
    assert!(
        app.slots(f.doctor.id, at(0), at(23))
            .await
            .contains(&at(11))
    );
    let r = app
        .post(
            &ann_t,
            &format!("/api/v1/appointments/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "invalid_transition");

    // Inside the cut-off a patient can no longer cancel or move; staff can.
    let strict = app.clinic("UTC", 7 * 1440).await;
    let g = app.doctor_in(strict, "Dr. Strict", "08:00", "18:00").await;
    let s = expect(app.book(&bob_t, g.doctor.id, at(9), None).await, 201).await;
    let sid = s["id"].as_str().unwrap();
    let r = app
        .post(
            &bob_t,
            &format!("/api/v1/appointments/{sid}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "cancellation_cutoff");
    let r = app
        .post(
            &bob_t,
            &format!("/api/v1/appointments/{sid}/reschedule"),
            json!({"start": at(14).to_rfc3339()}),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "cancellation_cutoff");
    let (_, admin_t) = app.user(Role::ClinicAdmin, None, Some(strict)).await;
    let c = expect(
        app.post(
            &admin_t,
            &format!("/api/v1/appointments/{sid}/cancel"),
            json!({"reason": "doctor ill"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(c["status"], "cancelled");
}

#[actix_web::test]
async fn each_role_sees_and_changes_only_what_it_may() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let other_clinic = app.clinic("Europe/Berlin", 60).await;
    let g = app
        .doctor_in(other_clinic, "Dr. Other", "08:00", "18:00")
        .await;
    let (_, ann_t) = app.patient().await;
    let (_, bob_t) = app.patient().await;
    let (_, doc_t) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, other_doc_t) = app.user(Role::Doctor, Some(&g.doctor), None).await;
    let (_, admin_t) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let (_, other_admin_t) = app.user(Role::ClinicAdmin, None, Some(other_clinic)).await;
    let day = Utc::now().date_naive() + Duration::days(2);
    let at = day.and_hms_opt(9, 0, 0).unwrap().and_utc();

    let a = expect(app.book(&ann_t, f.doctor.id, at, None).await, 201).await;
    let path = format!("/api/v1/appointments/{}", a["id"].as_str().unwrap());

    // Patients: only their own.
    expect(app.get(&ann_t, &path).await, 200).await;
    assert_eq!(
        expect(app.get(&bob_t, &path).await, 404).await["code"],
        "appointment_not_found"
    );
    let r = app.post(&bob_t, &format!("{path}/cancel"), json!({})).await;
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");
    let r = app
        .post(
            &bob_t,
            &format!("{path}/reschedule"),
            json!({"start": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");
    // Only patients book.
    assert_eq!(
        expect(app.book(&doc_t, f.doctor.id, at, None).await, 403).await["code"],
        "forbidden"
    );

    // Doctors: their own calendar.
    expect(app.get(&doc_t, &path).await, 200).await;
    expect(app.get(&other_doc_t, &path).await, 404).await;
    let cal = expect(app.get(&doc_t, "/api/v1/appointments").await, 200).await;
    assert_eq!(cal["appointments"].as_array().unwrap().len(), 1);
    let day_path = format!("/api/v1/doctors/{}/day?date={day}", f.doctor.id);
    let d = expect(app.get(&doc_t, &day_path).await, 200).await;
    assert_eq!(d["appointments"].as_array().unwrap().len(), 1);
    assert_eq!(d["time_zone"], "UTC");
    assert_eq!(
        expect(app.get(&other_doc_t, &day_path).await, 403).await["code"],
        "forbidden"
    );
    assert_eq!(
        expect(app.get(&ann_t, &day_path).await, 403).await["code"],
        "forbidden"
    );
    for bad in ["-262143-01-01", "0001-01-01", "2026-13-01"] {
        let r = app
            .get(
                &doc_t,
                &format!("/api/v1/doctors/{}/day?date={bad}", f.doctor.id),
            )
            .await;
        assert_eq!(expect(r, 422).await["code"], "invalid_date", "{bad}");
    }
    let cal = expect(app.get(&other_doc_t, "/api/v1/appointments").await, 200).await;
    assert_eq!(cal["appointments"], json!([]));

    // Admins: their clinic only.
    expect(app.get(&admin_t, &path).await, 200).await;
    expect(app.get(&other_admin_t, &path).await, 404).await;
    let cal = expect(
        app.get(
            &admin_t,
            &format!("/api/v1/appointments?doctor_id={}", f.doctor.id),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cal["appointments"].as_array().unwrap().len(), 1);
    let r = app
        .get(
            &other_admin_t,
            &format!("/api/v1/appointments?doctor_id={}", f.doctor.id),
        )
        .await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");
    assert_eq!(
        expect(app.get(&admin_t, "/api/v1/appointments").await, 422).await["code"],
        "doctor_id_required"
    );

    // Outcomes: staff only, and only once the visit started.
    let r = app
        .post(
            &ann_t,
            &format!("{path}/outcome"),
            json!({"status": "completed"}),
        )
        .await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");
    let r = app
        .post(
            &doc_t,
            &format!("{path}/outcome"),
            json!({"status": "completed"}),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "not_started");
    let r = app
        .post(
            &doc_t,
            &format!("{path}/outcome"),
            json!({"status": "late"}),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "invalid_status");
}

#[actix_web::test]
async fn past_visits_can_be_marked_completed_or_no_show() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (ann, _) = app.patient().await;
    let (_, doc_t) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    // A visit that began an hour ago (written directly: nobody books the past).
    let id = uuid::Uuid::now_v7();
    app.insert_raw(RawAppointment {
        id,
        doctor: f.doctor.id.0,
        patient: ann.id.0,
        visit_type: f.visit_type.0,
        start: Utc::now() - Duration::hours(1),
        minutes: 30,
        status: "booked",
        hold_expires_at: None,
    })
    .await;
    let path = format!("/api/v1/appointments/{id}/outcome");
    let v = expect(
        app.post(&doc_t, &path, json!({"status": "no_show"})).await,
        200,
    )
    .await;
    assert_eq!(v["status"], "no_show");
    // A late arrival after all: corrected.
    let v = expect(
        app.post(&doc_t, &path, json!({"status": "completed"}))
            .await,
        200,
    )
    .await;
    assert_eq!(v["status"], "completed");
    let h = expect(
        app.get(&doc_t, &format!("/api/v1/appointments/{id}/history"))
            .await,
        200,
    )
    .await;
    let actions: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["no_show", "complete"]);
}

#[actix_web::test]
async fn slots_follow_the_clinic_zone_across_dst() {
    let app = spawn_app().await;
    // New York springs forward on 2027-03-14 (02:00 EST → 03:00 EDT) and
    // falls back on 2027-11-07 (02:00 EDT → 01:00 EST).
    let clinic = app.clinic("America/New_York", 0).await;
    let f = app.doctor_in(clinic, "Dr. Night", "01:00", "04:00").await;
    let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    if Utc::now() > t("2027-03-01T00:00:00Z") {
        return; // the horizon check below would need new dates
    }
    let spring = app
        .slots(
            f.doctor.id,
            t("2027-03-14T05:00:00Z"),
            t("2027-03-14T09:00:00Z"),
        )
        .await;
    // 01:00 EST = 06:00Z … 04:00 EDT = 08:00Z: two real hours.
    assert_eq!(
        spring,
        vec![
            t("2027-03-14T06:00:00Z"),
            t("2027-03-14T06:30:00Z"),
            t("2027-03-14T07:00:00Z"),
            t("2027-03-14T07:30:00Z")
        ]
    );
    let autumn = app
        .slots(
            f.doctor.id,
            t("2027-11-07T04:00:00Z"),
            t("2027-11-07T10:00:00Z"),
        )
        .await;
    // 01:00 EDT = 05:00Z … 04:00 EST = 09:00Z: four real hours.
    assert_eq!(autumn.len(), 8);
    assert_eq!(autumn[0], t("2027-11-07T05:00:00Z"));
    assert_eq!(autumn[7], t("2027-11-07T08:30:00Z"));

    // And a booking in the repeated hour works like any other.
    let (_, token) = app.patient().await;
    expect(
        app.book(&token, f.doctor.id, t("2027-11-07T06:00:00Z"), None)
            .await,
        201,
    )
    .await;
    let day = expect(
        app.get(
            &app.user(Role::ClinicAdmin, None, Some(clinic)).await.1,
            &format!("/api/v1/doctors/{}/day?date=2027-11-07", f.doctor.id),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(day["appointments"].as_array().unwrap().len(), 1);
    assert_eq!(day["utc_offset_at_start"], "-04:00");
}

#[actix_web::test]
async fn appointment_lists_take_a_bounded_window() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, ann) = app.patient().await;
    let (_, doc) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let near = tomorrow_at(9, 0);
    let far = tomorrow_at(10, 0) + Duration::days(10);
    for start in [near, far] {
        expect(app.book(&ann, f.doctor.id, start, None).await, 201).await;
    }
    let window = |from: DateTime<Utc>, to: DateTime<Utc>| {
        serde_urlencoded::to_string([("from", from.to_rfc3339()), ("to", to.to_rfc3339())]).unwrap()
    };
    let week = window(near - Duration::hours(1), near + Duration::days(7));
    for (token, path) in [
        (&ann, format!("/api/v1/appointments?{week}")),
        (&doc, format!("/api/v1/appointments?{week}")),
    ] {
        let list = expect(app.get(token, &path).await, 200).await;
        let starts: Vec<&str> = list["appointments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["start"].as_str().unwrap())
            .collect();
        assert_eq!(starts.len(), 1, "{list}");
        assert_eq!(starts[0].parse::<DateTime<Utc>>().unwrap(), near);
    }
    // Without a window: everything.
    let all = expect(app.get(&doc, "/api/v1/appointments").await, 200).await;
    assert_eq!(all["appointments"].as_array().unwrap().len(), 2);
    // Half a window, or ten years of one, is a client mistake.
    let r = app
        .get(
            &doc,
            &format!(
                "/api/v1/appointments?{}",
                serde_urlencoded::to_string([("from", near.to_rfc3339())]).unwrap()
            ),
        )
        .await;
    assert_eq!(expect(r, 422).await["code"], "missing_range");
    let decade = window(near, near + Duration::days(3650));
    let r = app
        .get(&doc, &format!("/api/v1/appointments?{decade}"))
        .await;
    assert_eq!(expect(r, 422).await["code"], "range_too_long");
}

//! Provider alerts: the outbox a doctor reads after being offline. Driven
//! through the HTTP API; the outbox is read from the store directly.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration as StdDuration,
};

use chrono::{DateTime, Duration, Utc};
use docspot::store::ProviderAlert;
use docspot_actors::domain::{AppointmentStatus, DoctorId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Options, TestApp, expect, spawn_app_with, spawn_two_nodes};

/// The appointment id in a response body.
fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().unwrap().parse().unwrap()
}

/// The doctor's alerts after `after_id`.
async fn alerts(app: &TestApp, doctor: DoctorId, after_id: i64) -> Vec<ProviderAlert> {
    app.state
        .store
        .provider_alerts_after(doctor, after_id, 100)
        .await
        .unwrap()
}

/// (kind, appointment) of each alert.
fn summary(list: &[ProviderAlert]) -> Vec<(&str, Uuid)> {
    list.iter()
        .map(|a| (a.kind.as_str(), a.appointment_id.0))
        .collect()
}

#[actix_web::test]
async fn doctors_get_an_alert_for_each_change_they_must_hear_about() {
    // Short holds, so one can lapse during the test.
    let app = spawn_app_with(Options {
        hold_ttl_secs: 2,
        ..Default::default()
    })
    .await;
    let f = app.fixture().await;
    let doctor = f.doctor.id;
    let (ann, ann_t) = app.patient().await;
    // Days ahead, well beyond the fixture's cut-off: the patient may reschedule.
    let day = Utc::now().date_naive() + Duration::days(3);
    let at = |h: u32, m: u32| -> DateTime<Utc> { day.and_hms_opt(h, m, 0).unwrap().and_utc() };
    assert!(alerts(&app, doctor, 0).await.is_empty());

    // A booking.
    let booked = id_of(&expect(app.book(&ann_t, doctor, at(9, 0), None).await, 201).await);
    let list = alerts(&app, doctor, 0).await;
    assert_eq!(summary(&list), [("booked", booked)]);
    let a = &list[0];
    assert_eq!((a.doctor_id, a.patient_id), (doctor, ann.id));
    assert_eq!((a.start, a.end), (at(9, 0), at(9, 30)));
    assert_eq!(a.previous_start, None);
    assert_eq!(a.status, AppointmentStatus::Booked);
    let after_booking = a.id;

    // A hold raises nothing until it is confirmed; then "hold_confirmed" only.
    let hold = id_of(&expect(app.hold(&ann_t, doctor, at(10, 0)).await, 201).await);
    assert!(alerts(&app, doctor, after_booking).await.is_empty());
    let r = app
        .post(&ann_t, &format!("/api/v1/holds/{hold}/confirm"), json!({}))
        .await;
    assert_eq!(expect(r, 200).await["status"], "booked");
    let list = alerts(&app, doctor, after_booking).await;
    assert_eq!(summary(&list), [("hold_confirmed", hold)]);
    assert_eq!(list[0].status, AppointmentStatus::Booked);
    let after_confirm = list[0].id;

    // A released hold and a lapsed one: no alert.
    let released = id_of(&expect(app.hold(&ann_t, doctor, at(11, 0)).await, 201).await);
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/holds/{released}")))
        .bearer_auth(&ann_t)
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["status"], "cancelled");
    let lapsing = id_of(&expect(app.hold(&ann_t, doctor, at(12, 0)).await, 201).await);
    let mut expired = false;
    for _ in 0..50 {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        if app.raw_status(lapsing).await == ("cancelled".into(), Some("hold_expired".into())) {
            expired = true;
            break;
        }
    }
    assert!(expired, "the hold lapsed");
    assert!(alerts(&app, doctor, after_confirm).await.is_empty());

    // Cancelling a booking.
    let r = app
        .post(
            &ann_t,
            &format!("/api/v1/appointments/{booked}/cancel"),
            json!({"reason": "feeling better"}),
        )
        .await;
    assert_eq!(expect(r, 200).await["status"], "cancelled");
    let list = alerts(&app, doctor, after_confirm).await;
    assert_eq!(summary(&list), [("cancelled", booked)]);
    assert_eq!(list[0].status, AppointmentStatus::Cancelled);
    assert_eq!(list[0].start, at(9, 0));
    let after_cancel = list[0].id;

    // Rescheduling a booking: with the start it had before.
    let r = app
        .post(
            &ann_t,
            &format!("/api/v1/appointments/{hold}/reschedule"),
            json!({"start": at(14, 0).to_rfc3339()}),
        )
        .await;
    expect(r, 200).await;
    let list = alerts(&app, doctor, after_cancel).await;
    assert_eq!(summary(&list), [("rescheduled", hold)]);
    let moved = &list[0];
    assert_eq!(moved.previous_start, Some(at(10, 0)));
    assert_eq!((moved.start, moved.end), (at(14, 0), at(14, 30)));
    assert_eq!(moved.status, AppointmentStatus::Booked);

    // Another doctor's alerts stay theirs.
    let other = app
        .doctor_in(f.clinic, "Dr. Other", "08:00", "18:00")
        .await
        .doctor
        .id;
    let theirs = id_of(&expect(app.book(&ann_t, other, at(9, 0), None).await, 201).await);
    assert_eq!(summary(&alerts(&app, other, 0).await), [("booked", theirs)]);

    // The whole outbox, in id order; paging from the last id seen.
    let all = alerts(&app, doctor, 0).await;
    assert_eq!(
        summary(&all),
        [
            ("booked", booked),
            ("hold_confirmed", hold),
            ("cancelled", booked),
            ("rescheduled", hold),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(alerts(&app, doctor, after_confirm).await, all[2..]);
    let page = app
        .state
        .store
        .provider_alerts_after(doctor, after_booking, 2)
        .await
        .unwrap();
    assert_eq!(page, all[1..3]);
    assert!(alerts(&app, doctor, all[3].id).await.is_empty());
}

#[actix_web::test]
async fn a_reader_paging_by_id_misses_no_alert_while_two_nodes_write() {
    let (a, b) = spawn_two_nodes().await;
    let f = a.fixture().await;
    let doctor = f.doctor.id;
    let day = Utc::now().date_naive() + Duration::days(3);
    let slots: Vec<DateTime<Utc>> = (0..20)
        .map(|i| day.and_hms_opt(8, 0, 0).unwrap().and_utc() + Duration::minutes(30 * i))
        .collect();
    let mut tokens = Vec::new();
    for _ in &slots {
        tokens.push(a.patient().await.1);
    }

    // Both nodes book distinct slots of one doctor at once, while a reader
    // pages through the outbox from the last id it saw, as a reconnecting
    // doctor would.
    let done = AtomicBool::new(false);
    let book = async {
        let results =
            futures::future::join_all(slots.iter().zip(&tokens).enumerate().map(|(i, (s, t))| {
                let node = if i % 2 == 0 { &a } else { &b };
                async move { expect(node.book(t, doctor, *s, None).await, 201).await }
            }))
            .await;
        done.store(true, Ordering::SeqCst);
        results
    };
    let read = async {
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let page = a
                .state
                .store
                .provider_alerts_after(doctor, cursor, 3)
                .await
                .unwrap();
            match page.last() {
                Some(last) => cursor = last.id,
                None if finished => break seen,
                None => tokio::time::sleep(StdDuration::from_millis(2)).await,
            }
            seen.extend(page);
        }
    };
    let (booked, seen) = futures::join!(book, read);

    let booked: HashSet<Uuid> = booked.iter().map(id_of).collect();
    let ids: Vec<Uuid> = seen.iter().map(|a| a.appointment_id.0).collect();
    assert_eq!(ids.len(), slots.len(), "one alert per booking: {ids:?}");
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>(), booked);
    assert!(seen.iter().all(|a| a.kind == "booked"));
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id));
}

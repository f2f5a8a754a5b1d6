use chrono::Duration;
use futures::future::join_all;

use crate::helpers::{Options, spawn_app, spawn_app_with, spawn_two_nodes, tomorrow_at};

#[actix_web::test]
async fn five_hundred_patients_race_for_one_slot_and_exactly_one_wins() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let at = tomorrow_at(10, 0);
    let mut tokens = Vec::new();
    for _ in 0..500 {
        tokens.push(app.patient().await.1);
    }
    let results = join_all(tokens.iter().map(|t| async {
        let r = app.book(t, f.doctor.id, at, None).await;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body)
    }))
    .await;
    let won = results.iter().filter(|(s, _)| *s == 201).count();
    let lost = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "slot_taken")
        .count();
    let other: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s != 201 && *s != 409)
        .collect();
    assert!(other.is_empty(), "no 5xx or other answers: {other:?}");
    assert_eq!((won, lost), (1, 499));
    assert_eq!(app.active_rows(f.doctor.id).await, 1);
}

#[actix_web::test]
async fn two_nodes_sharing_a_database_never_double_book() {
    let (a, b) = spawn_two_nodes().await;
    let f = a.fixture().await;
    let slots: Vec<_> = (0..10)
        .map(|i| tomorrow_at(8, 0) + Duration::minutes(30 * i))
        .collect();
    let mut tokens = Vec::new();
    for _ in 0..40 {
        tokens.push(a.patient().await.1);
    }
    // Warm both nodes' calendars so each decides from its own memory.
    a.slots(f.doctor.id, slots[0], slots[9]).await;
    b.slots(f.doctor.id, slots[0], slots[9]).await;
    // Every patient tries every slot, half through each node.
    let attempts = tokens
        .iter()
        .enumerate()
        .flat_map(|(i, t)| slots.iter().map(move |s| (i, t.clone(), *s)));
    let results = join_all(attempts.map(|(i, t, s)| {
        let node = if i % 2 == 0 { &a } else { &b };
        async move {
            (
                s,
                node.book(&t, f.doctor.id, s, None).await.status().as_u16(),
            )
        }
    }))
    .await;
    for s in &slots {
        let won = results
            .iter()
            .filter(|(x, st)| x == s && *st == 201)
            .count();
        let lost = results
            .iter()
            .filter(|(x, st)| x == s && *st == 409)
            .count();
        assert_eq!(won, 1, "exactly one winner for {s}");
        assert_eq!(lost, 39, "every loser hears 409 for {s}");
    }
    let sql = a.pg().await;
    let overlaps: i64 = sql
        .query_one(
            "SELECT count(*) FROM appointments x JOIN appointments y
               ON x.doctor_id = y.doctor_id AND x.id < y.id
              AND tstzrange(x.block_start, x.block_end) && tstzrange(y.block_start, y.block_end)
             WHERE x.status IN ('held','booked') AND y.status IN ('held','booked')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(overlaps, 0);
    assert_eq!(a.active_rows(f.doctor.id).await, 10);
}

#[actix_web::test]
async fn a_restarted_calendar_rebuilds_from_the_database() {
    let a = spawn_app().await;
    let f = a.fixture().await;
    let (_, t) = a.patient().await;
    let at = tomorrow_at(9, 0);
    assert_eq!(a.book(&t, f.doctor.id, at, None).await.status(), 201);
    // A fresh node (fresh actors) sees the booking and refuses the slot
    // from memory.
    let b = spawn_app_with(Options {
        database: Some(a.database.clone()),
        ..Default::default()
    })
    .await;
    let free = b.slots(f.doctor.id, at, at + Duration::hours(2)).await;
    assert!(!free.contains(&at));
    let (_, t2) = b.patient().await;
    assert_eq!(b.book(&t2, f.doctor.id, at, None).await.status(), 409);
}

#[actix_web::test]
async fn idle_calendars_stop_and_restart_on_demand() {
    let app = spawn_app_with(Options {
        idle_timeout_secs: 1,
        ..Default::default()
    })
    .await;
    let f = app.fixture().await;
    let (_, t) = app.patient().await;
    let at = tomorrow_at(9, 0);
    assert_eq!(app.book(&t, f.doctor.id, at, None).await.status(), 201);
    assert_eq!(app.state.calendars.running(), 1);
    // Idle checks run every half timeout: stopped within 1.5 s of the last request.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert_eq!(
        app.state.calendars.running(),
        0,
        "an idle calendar frees its memory"
    );
    // The next request starts a fresh actor that still knows the booking.
    let (_, t2) = app.patient().await;
    assert_eq!(app.book(&t2, f.doctor.id, at, None).await.status(), 409);
    assert_eq!(app.state.calendars.running(), 1);
}

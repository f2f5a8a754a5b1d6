//! The web app in a real browser: headless Chromium driven over WebDriver
//! (see `webdriver.rs`), against a real server and database per test.
//! Screenshots of every page land in `$CARGO_TARGET_DIR/browser-artifacts/`.

use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use docspot::domain::Role;
use serde_json::json;
use uuid::Uuid;

use crate::{
    helpers::{RawAppointment, expect, spawn_app},
    webdriver::{Browser, Driver, Relay},
};

const SECS_5: Duration = Duration::from_secs(5);
const SECS_10: Duration = Duration::from_secs(10);

/// Fails the test if the page logged a Content-Security-Policy violation
/// or a script error: the strict policy must not break the app.
async fn assert_clean_console(b: &Browser, page: &str) {
    let problems = b.console_problems().await;
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

/// Opens the patient page and chooses the doctor; waits for free slots.
async fn open_doctor(b: &Browser, base: &str, doctor: Uuid) {
    b.goto(&format!("{base}/")).await;
    let choose = format!("button.choose[data-doctor='{doctor}']");
    b.wait_visible(&choose, SECS_10).await;
    b.click(&choose).await;
    b.wait_visible("#week button.slot", SECS_10).await;
}

/// The start of the first free slot at least `hours` ahead, as shown.
async fn slot_after(b: &Browser, hours: i64) -> String {
    b.js(
        "const min = Date.now() + arguments[0] * 3600e3;
         const s = [...document.querySelectorAll('#week button.slot')]
           .find((e) => Date.parse(e.dataset.start) > min);
         return s ? s.dataset.start : null;",
        json!([hours]),
    )
    .await
    .as_str()
    .expect("a free slot in the week")
    .to_string()
}

fn slot_css(start: &str) -> String {
    format!("#week button.slot[data-start='{start}']")
}

#[actix_web::test]
async fn two_patients_one_books_and_the_other_sees_the_slot_go_within_a_second() {
    let app = spawn_app().await;
    let clinic = app.clinic("Europe/Berlin", 0).await;
    let fx = app
        .doctor_in(clinic, "Dr. Ada Browser", "07:00", "19:00")
        .await;
    let (alice, _) = app.user(Role::Patient, None, None).await;
    let driver = Driver::start().await;
    // Alice on a 360-px phone, Bob on a desktop.
    let a = driver.session(360, 740).await;
    let b = driver.session(1280, 900).await;
    open_doctor(&a, &app.address, fx.doctor.id.0).await;
    open_doctor(&b, &app.address, fx.doctor.id.0).await;

    // Times are shown in the clinic's zone, and say so.
    let note = a.text("#zone-note").await;
    assert!(note.contains("Europe/Berlin"), "{note}");

    let first = slot_after(&a, 2).await;
    b.wait_visible(&slot_css(&first), SECS_5).await;
    a.screenshot("patient-week-360").await;

    // Picking a time while signed out asks to sign in, then holds it.
    a.click(&slot_css(&first)).await;
    a.wait_visible("#signin-form", SECS_5).await;
    a.type_into("#email", &alice.email).await;
    a.type_into("#password", "password-123").await;
    a.click("#signin-form button[type=submit]").await;
    a.wait_visible("#hold", SECS_10).await;
    b.wait_for(
        "the held slot to vanish for Bob",
        SECS_5,
        "return !document.querySelector(arguments[0])",
        json!([slot_css(&first)]),
    )
    .await;

    // The countdown is visible and counts down.
    let c1 = a.text("#hold-countdown").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c2 = a.text("#hold-countdown").await;
    let secs = |s: &str| {
        let m = s
            .split_whitespace()
            .find(|w| w.contains(':'))
            .unwrap_or_else(|| panic!("no m:ss in {s:?}"));
        let (min, sec) = m.split_once(':').unwrap();
        min.parse::<i64>().unwrap() * 60 + sec.trim_end_matches('.').parse::<i64>().unwrap()
    };
    assert!(secs(&c1) > 200 && secs(&c1) <= 300, "{c1}");
    assert!(secs(&c2) < secs(&c1), "{c1} → {c2}");
    a.screenshot("patient-hold-360").await;

    a.click("#hold-confirm").await;
    a.wait_visible("#appointments li.appointment.booked", SECS_10)
        .await;
    assert!(!a.text("#message").await.is_empty());

    // Now the timed part: from Alice's click to Bob's screen, under 1 s.
    let second = slot_after(&a, 3).await;
    assert_ne!(second, first);
    b.wait_visible(&slot_css(&second), SECS_5).await;
    let t0 = Instant::now();
    a.click(&slot_css(&second)).await;
    b.wait_for(
        "the slot Alice took to vanish for Bob",
        Duration::from_secs(1),
        "return !document.querySelector(arguments[0])",
        json!([slot_css(&second)]),
    )
    .await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "Bob saw it after {took:?}");
    a.wait_visible("#hold", SECS_5).await;
    a.click("#hold-confirm").await;
    a.wait_for(
        "two booked appointments",
        SECS_10,
        "return document.querySelectorAll('#appointments li.appointment.booked').length === 2",
        json!([]),
    )
    .await;
    b.screenshot("patient-desktop").await;
    a.js(
        "document.getElementById('mine').scrollIntoView()",
        json!([]),
    )
    .await;
    a.screenshot("patient-booked-360").await;

    // Cancel the second one: Bob sees the slot come back.
    let appointments = expect(
        app.get(
            &app.state.keys.issue(&alice).unwrap(),
            "/api/v1/appointments",
        )
        .await,
        200,
    )
    .await;
    let second_id = appointments["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| {
            x["start"]
                .as_str()
                .map(|s| s.parse::<chrono::DateTime<Utc>>().unwrap())
                == Some(second.parse().unwrap())
        })
        .expect("the second appointment")["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.click(&format!(
        "#appointments li[data-id='{second_id}'] button.cancel"
    ))
    .await;
    a.wait_visible(
        &format!("#appointments li.cancelled[data-id='{second_id}']"),
        SECS_10,
    )
    .await;
    b.wait_visible(&slot_css(&second), SECS_5).await;

    // The .ics download: a real file with the visit in UTC.
    let first_id = appointments["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"].as_str() != Some(second_id.as_str()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.click(&format!(
        "#appointments li[data-id='{first_id}'] button.ics"
    ))
    .await;
    let file = a.downloads.join(format!("docspot-{first_id}.ics"));
    let deadline = Instant::now() + SECS_10;
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "no download at {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ics = std::fs::read_to_string(&file).unwrap();
    let start: chrono::DateTime<Utc> = first.parse().unwrap();
    assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
    assert!(
        ics.contains(&format!("DTSTART:{}\r\n", start.format("%Y%m%dT%H%M%SZ"))),
        "{ics}"
    );
    assert!(
        ics.contains("SUMMARY:Appointment with Dr. Ada Browser"),
        "{ics}"
    );

    // Reschedule the first visit from the list: pick a new time above.
    let third = slot_after(&a, 5).await;
    a.click(&format!(
        "#appointments li[data-id='{first_id}'] button.reschedule"
    ))
    .await;
    a.wait_visible("#reschedule-note", SECS_5).await;
    a.click(&slot_css(&third)).await;
    b.wait_visible(&slot_css(&first), SECS_5).await;
    b.wait_for(
        "the new time to vanish for Bob",
        SECS_5,
        "return !document.querySelector(arguments[0])",
        json!([slot_css(&third)]),
    )
    .await;
    let moved = expect(
        app.get(
            &app.state.keys.issue(&alice).unwrap(),
            &format!("/api/v1/appointments/{first_id}"),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        moved["start"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        third.parse::<chrono::DateTime<Utc>>().unwrap()
    );

    // Installable: the service worker is active and the manifest linked.
    a.wait_for(
        "the service worker",
        SECS_10,
        "return navigator.serviceWorker.getRegistration().then((r) => !!(r && r.active))",
        json!([]),
    )
    .await;
    assert_eq!(
        a.js(
            "return document.querySelector('link[rel=manifest]').href",
            json!([])
        )
        .await,
        format!("{}/manifest.webmanifest", app.address)
    );
    // Switching the language re-renders in place, without errors.
    a.js(
        "const s = document.getElementById('lang'); s.value = 'de'; s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    a.wait_for(
        "German strings",
        SECS_5,
        "return document.getElementById('mine-h').textContent === 'Meine Termine'",
        json!([]),
    )
    .await;
    assert!(
        a.js("const m = document.getElementById('message'); return m.hidden || !m.classList.contains('error')", json!([]))
            .await
            == true,
        "an error was shown after switching language"
    );
    a.js(
        "document.getElementById('mine').scrollIntoView()",
        json!([]),
    )
    .await;
    a.screenshot("patient-de-360").await;

    assert_clean_console(&a, "patient (phone)").await;
    assert_clean_console(&b, "patient (desktop)").await;
    // The phone layout does not scroll sideways at 360 px.
    let overflow = a
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert_eq!(overflow, 0, "horizontal overflow at 360 px");
    a.close().await;
    b.close().await;
}

#[actix_web::test]
async fn the_wall_display_updates_live_after_a_booking_through_the_api() {
    let app = spawn_app().await;
    let clinic = app.clinic("Europe/Berlin", 0).await;
    let fx = app
        .doctor_in(clinic, "Dr. Wall One", "06:00", "22:00")
        .await;
    app.doctor_in(clinic, "Dr. Wall Two", "09:00", "17:00")
        .await;
    let (_, token) = app.patient().await;
    let driver = Driver::start().await;
    let b = driver.session(1920, 1080).await;
    // The display reaches the server through a relay the test can cut.
    let relay = Relay::start(&app.address).await;
    b.goto(&format!("{}/display/{}", relay.address, clinic.0))
        .await;
    let row = format!("tr[data-doctor='{}']", fx.doctor.id.0);
    b.wait_visible(&row, SECS_10).await;
    b.wait_visible("#board tr:nth-child(2)", SECS_5).await;
    let next: String = b
        .js(
            "return document.querySelector(arguments[0]).dataset.nextFree",
            json!([row]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(!next.is_empty(), "a next free slot is shown");
    let title = b.text("#title").await;
    assert!(title.contains("Test Clinic"), "{title}");
    b.screenshot("display-before").await;

    // Book exactly the slot the board shows as next free: the board moves on.
    expect(
        app.book(&token, fx.doctor.id, next.parse().unwrap(), None)
            .await,
        201,
    )
    .await;
    let t0 = Instant::now();
    b.wait_for(
        "the board to move past the booked slot",
        Duration::from_secs(2),
        "const r = document.querySelector(arguments[0]); return r && r.dataset.nextFree !== arguments[1];",
        json!([row, next]),
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(
        b.text("#live-status").await,
        "Live",
        "the display says it is connected"
    );
    // Today's schedule shows the booked time as booked (times only). When
    // the clinic's day is over, the next free slot is on a later day and
    // today's schedule cannot hold it: then it must not be listed at all.
    let chips = b
        .js(
            "return [...document.querySelectorAll(arguments[0] + ' .chip')].map((c) => [c.dataset.start, c.dataset.status]);",
            json!([row]),
        )
        .await;
    let booked: chrono::DateTime<chrono::Utc> = next.parse().unwrap();
    let listed = chips.as_array().unwrap().iter().find(|c| {
        c[0].as_str()
            .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok())
            == Some(booked)
    });
    let berlin =
        |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&chrono_tz::Europe::Berlin).date_naive();
    if berlin(booked) == berlin(chrono::Utc::now()) || listed.is_some() {
        assert_eq!(
            listed.map(|c| c[1].clone()),
            Some(json!("booked")),
            "the booked slot in today's schedule: {chips}"
        );
    }
    b.screenshot("display-after").await;

    // The network drops: the board says so, then reconnects by itself and
    // catches up with what happened meanwhile.
    relay.cut();
    b.wait_for(
        "the board to notice the drop",
        SECS_10,
        "return document.getElementById('live-status').classList.contains('off')",
        json!([]),
    )
    .await;
    b.screenshot("display-offline").await;
    let next_now: String = b
        .js(
            "return document.querySelector(arguments[0]).dataset.nextFree",
            json!([row]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    expect(
        app.book(&token, fx.doctor.id, next_now.parse().unwrap(), None)
            .await,
        201,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.restore();
    b.wait_for(
        "the board to reconnect",
        Duration::from_secs(15),
        "return !document.getElementById('live-status').classList.contains('off')",
        json!([]),
    )
    .await;
    b.wait_for(
        "the board to reconnect and catch up",
        Duration::from_secs(15),
        "const r = document.querySelector(arguments[0]);
         return r && r.dataset.nextFree !== arguments[1]
           && !document.getElementById('live-status').classList.contains('off');",
        json!([row, next_now]),
    )
    .await;
    assert_clean_console(&b, "wall display").await;
    b.close().await;
}

#[actix_web::test]
async fn the_provider_sees_an_alert_for_a_new_booking_and_records_an_outcome() {
    let app = spawn_app().await;
    let clinic = app.clinic("UTC", 0).await;
    let fx = app
        .doctor_in(clinic, "Dr. Pia Provider", "00:00", "23:30")
        .await;
    let (doctor_user, _) = app.user(Role::Doctor, Some(&fx.doctor), None).await;
    let (patient, token) = app.patient().await;
    // A visit that started a minute ago, written before the calendar loads,
    // so the doctor can record its outcome.
    let now = Utc::now();
    let started = RawAppointment {
        id: Uuid::now_v7(),
        doctor: fx.doctor.id.0,
        patient: patient.id.0,
        visit_type: fx.visit_type.0,
        start: now - Span::minutes(1),
        minutes: 30,
        status: "booked",
        hold_expires_at: None,
    };
    let started_id = started.id;
    app.insert_raw(started).await;
    // Some history for the charts: visits on past days, kept and missed.
    for (days_ago, hour, status) in [
        (1, 9, "completed"),
        (1, 10, "completed"),
        (2, 9, "no_show"),
        (3, 11, "completed"),
        (8, 9, "completed"),
        (9, 14, "no_show"),
        (10, 9, "completed"),
        (15, 10, "completed"),
    ] {
        let day = (now - Span::days(days_ago)).date_naive();
        app.insert_raw(RawAppointment {
            id: Uuid::now_v7(),
            doctor: fx.doctor.id.0,
            patient: patient.id.0,
            visit_type: fx.visit_type.0,
            start: day.and_hms_opt(hour, 0, 0).unwrap().and_utc(),
            minutes: 30,
            status,
            hold_expires_at: None,
        })
        .await;
    }

    let driver = Driver::start().await;
    let b = driver.session(1280, 1000).await;
    b.goto(&app.url("/provider")).await;
    b.wait_visible("#signin-form", SECS_10).await;
    b.type_into("#email", &doctor_user.email).await;
    b.type_into("#password", "password-123").await;
    b.click("#signin-form button[type=submit]").await;
    b.wait_visible("#desk", SECS_10).await;
    b.wait_visible("#alerts li.muted", SECS_10).await;
    b.wait_visible("#chart-fill svg", SECS_10).await;

    // A patient books through the API: the alert shows at once.
    let slots = app
        .slots(fx.doctor.id, now + Span::hours(2), now + Span::hours(30))
        .await;
    expect(app.book(&token, fx.doctor.id, slots[0], None).await, 201).await;
    let t0 = Instant::now();
    b.wait_visible("#alerts li[data-kind='booked']", SECS_5)
        .await;
    b.wait_visible(".toast", SECS_5).await;
    assert!(t0.elapsed() < SECS_5);
    let toast = b.text(".toast").await;
    assert!(toast.starts_with("New booking"), "{toast}");
    b.wait_visible("#week li[data-id]", SECS_5).await;
    b.screenshot("provider-alert").await;
    b.js(
        "document.getElementById('stats').scrollIntoView()",
        json!([]),
    )
    .await;
    b.screenshot("provider-stats").await;
    let rate = b.text("#no-show").await;
    assert!(rate.ends_with("25 %"), "2 of 8 visits missed: {rate}");

    // Mark the started visit completed.
    let done = format!("#today li[data-id='{started_id}'] button.completed");
    b.wait_visible(&done, SECS_5).await;
    b.click(&done).await;
    b.wait_visible(
        &format!("#today li.completed[data-id='{started_id}']"),
        SECS_10,
    )
    .await;
    assert_eq!(app.raw_status(started_id).await.0, "completed");

    // German, from the one strings table; times still in the clinic zone.
    b.js(
        "const s = document.getElementById('lang'); s.value = 'de'; s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    b.wait_for(
        "German strings",
        SECS_5,
        "return document.getElementById('alerts-h').textContent === 'Meldungen'",
        json!([]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.js("const m = document.getElementById('message'); return m.hidden || !m.classList.contains('error')", json!([]))
            .await
            == true,
        "an error was shown after switching language: {}",
        b.text("#message").await
    );
    b.screenshot("provider-de").await;
    assert_clean_console(&b, "provider").await;
    b.close().await;
}

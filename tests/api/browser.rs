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
    webdriver::{BROWSER_TZ, Browser, Driver, Relay},
};

const SECS_5: Duration = Duration::from_secs(5);
const SECS_10: Duration = Duration::from_secs(10);

/// Fails the test if the page logged a Content-Security-Policy violation
/// or a script error: the strict policy must not break the app.
async fn assert_clean_console(b: &Browser, page: &str) {
    let problems = b.console_problems().await;
    assert!(problems.is_empty(), "{page}: {problems:#?}");
    assert_labelled(b, page).await;
}

/// Every visible control has a name a screen reader can announce: a
/// `<label>`, `aria-label(ledby)` or, for buttons and links, text.
async fn assert_labelled(b: &Browser, page: &str) {
    let unnamed = b
        .js(
            "return [...document.querySelectorAll('input, select, textarea, button, a[href]')]
               .filter((e) => e.offsetParent !== null && e.type !== 'hidden')
               .filter((e) => !(e.labels?.length || e.getAttribute('aria-label')
                 || e.getAttribute('aria-labelledby') || e.getAttribute('title')
                 || (['BUTTON', 'A'].includes(e.tagName) && e.textContent.trim())))
               .map((e) => e.outerHTML.slice(0, 120))",
            json!([]),
        )
        .await;
    assert_eq!(unnamed, json!([]), "{page}: controls without a name");
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

/// A time of day as the English pages show it in `zone` ("09:30 AM").
fn shown_time(start: &str, zone: chrono_tz::Tz) -> String {
    let t: chrono::DateTime<Utc> = start.parse().unwrap();
    t.with_timezone(&zone).format("%I:%M %p").to_string()
}

/// Intl puts a narrow no-break space before AM/PM: compare plain spaces.
fn plain(s: &str) -> String {
    s.replace(['\u{202f}', '\u{a0}'], " ").trim().to_string()
}

/// Every element `css` matches (at least one) shows the time of its
/// `data-start` in the clinic's `zone`, not in the browser's.
async fn assert_times_in(b: &Browser, css: &str, zone: chrono_tz::Tz) {
    assert_eq!(
        b.js(
            "return Intl.DateTimeFormat().resolvedOptions().timeZone",
            json!([])
        )
        .await,
        BROWSER_TZ,
        "the browser must run in another zone than the clinic's"
    );
    let browser_zone: chrono_tz::Tz = BROWSER_TZ.parse().unwrap();
    let shown = b
        .js(
            "return [...document.querySelectorAll(arguments[0])].map((e) => [e.dataset.start, e.textContent])",
            json!([css]),
        )
        .await;
    let shown = shown.as_array().unwrap();
    assert!(!shown.is_empty(), "nothing matches {css}");
    for s in shown {
        let start = s[0].as_str().unwrap();
        let text = plain(s[1].as_str().unwrap());
        assert_eq!(text, shown_time(start, zone), "{css} at {start}");
        assert_ne!(
            text,
            shown_time(start, browser_zone),
            "{css} at {start}: the zones must differ at this instant"
        );
    }
}

/// The page does not scroll sideways.
async fn assert_no_overflow(b: &Browser, page: &str) {
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert_eq!(overflow, 0, "{page}: horizontal overflow");
}

/// Signs in through the page's form.
async fn sign_in(b: &Browser, email: &str) {
    b.wait_visible("#signin-form", SECS_10).await;
    b.type_into("#email", email).await;
    b.type_into("#password", "password-123").await;
    b.click("#signin-form button[type=submit]").await;
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
    // Alice on a 360-px phone whose clock is ten minutes fast (her hold's
    // countdown must still be right), Bob on a desktop.
    let a = driver.session(360, 740).await;
    a.before_every_page("const real = Date.now.bind(Date); Date.now = () => real() + 600000;")
        .await;
    let b = driver.session(1280, 900).await;
    open_doctor(&a, &app.address, fx.doctor.id.0).await;
    open_doctor(&b, &app.address, fx.doctor.id.0).await;

    // Times are shown in the clinic's zone, and say so: the browsers run
    // in Los Angeles, the clinic is in Berlin.
    let note = a.text("#zone-note").await;
    assert!(note.contains("Europe/Berlin"), "{note}");
    assert_times_in(&a, "#week button.slot", chrono_tz::Europe::Berlin).await;
    assert_times_in(&b, "#week button.slot", chrono_tz::Europe::Berlin).await;

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

    // The message line follows a language switch (it is not left in the
    // language it was first shown in).
    a.wait_for(
        "the reschedule message",
        SECS_5,
        "const m = document.getElementById('message'); return !m.hidden && m.textContent.startsWith('Moved to');",
        json!([]),
    )
    .await;
    let switch = "const s = document.getElementById('lang'); s.value = arguments[0]; s.dispatchEvent(new Event('change'));";
    a.js(switch, json!(["de"])).await;
    let shown = a.text("#message").await;
    assert!(shown.starts_with("Verschoben auf Mi."), "{shown}");
    a.js(switch, json!(["en"])).await;

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
    assert_no_overflow(&a, "patient at 360 px").await;
    a.close().await;
    b.close().await;
}

/// A fixed-offset zone (`Etc/GMT…`, whose sign is inverted) where it is
/// now between 10:00 and 13:00, and whose offset is never the browser's: a
/// doctor open all day there always has free times left today.
fn a_zone_at_midday() -> (String, chrono_tz::Tz) {
    use chrono::{Offset, Timelike};
    let now = Utc::now();
    let browser: chrono_tz::Tz = BROWSER_TZ.parse().unwrap();
    let browser_hours = now.with_timezone(&browser).offset().fix().local_minus_utc() / 3600;
    let mut hours = 12 - now.hour() as i32; // -11 ..= 12
    if hours == browser_hours {
        hours -= 2;
    }
    let name = match hours {
        0 => "UTC".to_string(),
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    };
    let tz = name.parse().unwrap();
    (name, tz)
}

#[actix_web::test]
async fn the_wall_display_updates_live_after_a_booking_through_the_api() {
    let app = spawn_app().await;
    let (zone_name, zone) = a_zone_at_midday();
    let clinic = app.clinic(&zone_name, 0).await;
    let fx = app
        .doctor_in(clinic, "Dr. Wall One", "00:00", "23:30")
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
    // Today's schedule and the next free time, in the clinic's zone (the
    // browser is in Los Angeles).
    assert_times_in(&b, &format!("{row} .chip"), zone).await;
    assert_eq!(
        plain(&b.text(&format!("{row} td.next")).await),
        shown_time(&next, zone),
        "the next free time today, in {zone_name}"
    );
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
    // Today's schedule shows the booked time as booked (times only): the
    // clinic's day has hours left, so the next free slot was today's.
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
    assert_eq!(
        booked.with_timezone(&zone).date_naive(),
        Utc::now().with_timezone(&zone).date_naive(),
        "the next free slot in {zone_name} is today's"
    );
    assert_eq!(
        listed.map(|c| c[1].clone()),
        Some(json!("booked")),
        "the booked slot in today's schedule: {chips}"
    );
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
    // One that ended just before it, for a no-show.
    let missed_id = Uuid::now_v7();
    app.insert_raw(RawAppointment {
        id: missed_id,
        doctor: fx.doctor.id.0,
        patient: patient.id.0,
        visit_type: fx.visit_type.0,
        start: now - Span::minutes(2),
        minutes: 1,
        status: "booked",
        hold_expires_at: None,
    })
    .await;
    // A visit two days ago that nobody marked: still markable from the page.
    let forgotten_id = Uuid::now_v7();
    app.insert_raw(RawAppointment {
        id: forgotten_id,
        doctor: fx.doctor.id.0,
        patient: patient.id.0,
        visit_type: fx.visit_type.0,
        start: (now - Span::days(2))
            .date_naive()
            .and_hms_opt(15, 0, 0)
            .unwrap()
            .and_utc(),
        minutes: 30,
        status: "booked",
        hold_expires_at: None,
    })
    .await;
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
    sign_in(&b, &doctor_user.email).await;
    b.wait_visible("#desk", SECS_10).await;
    b.wait_visible("#alerts li.muted", SECS_10).await;
    b.wait_visible("#chart-fill svg", SECS_10).await;

    // Browser notifications, with permission granted and the page in the
    // background: a recorder stands in for the page's Notification and for
    // the service worker's showNotification (which Android Chrome needs:
    // there `new Notification()` throws).
    b.wait_for(
        "the service worker",
        SECS_10,
        "return navigator.serviceWorker.getRegistration().then((r) => !!(r && r.active))",
        json!([]),
    )
    .await;
    b.js(
        "window.__notes = [];
         window.__android = false;
         document.hasFocus = () => false;
         class Recorder {
           constructor(title, options) {
             if (window.__android) throw new TypeError(\"Failed to construct 'Notification': Illegal constructor.\");
             window.__notes.push({ via: 'page', title, body: options.body });
           }
         }
         Recorder.permission = 'granted';
         Recorder.requestPermission = async () => 'granted';
         window.Notification = Recorder;
         ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
           window.__notes.push({ via: 'worker', title, body: options.body });
           return Promise.resolve();
         };",
        json!([]),
    )
    .await;

    // A patient books through the API: the alert shows at once.
    let slots = app
        .slots(fx.doctor.id, now + Span::hours(2), now + Span::hours(30))
        .await;
    let booked = expect(app.book(&token, fx.doctor.id, slots[0], None).await, 201).await;
    let booked_id = booked["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    b.wait_visible("#alerts li[data-kind='booked']", SECS_5)
        .await;
    b.wait_visible(".toast", SECS_5).await;
    assert!(t0.elapsed() < SECS_5);
    let toast = b.text(".toast").await;
    assert!(toast.starts_with("New booking"), "{toast}");
    let note = b
        .wait_for(
            "a browser notification for the booking",
            SECS_5,
            "return window.__notes.find((n) => n.body.startsWith('New booking'))",
            json!([]),
        )
        .await;
    assert_eq!(note["via"], "page", "{note}");
    assert_eq!(note["title"], "DocSpot", "{note}");

    // The patient moves it, then cancels it: an alert of each kind. On
    // "Android" the page's constructor throws and the worker shows them.
    b.js("window.__android = true;", json!([])).await;
    expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{booked_id}/reschedule"),
            json!({"start": slots[1]}),
        )
        .await,
        200,
    )
    .await;
    b.wait_visible("#alerts li[data-kind='rescheduled']", SECS_5)
        .await;
    let note = b
        .wait_for(
            "the worker's notification for the reschedule",
            SECS_5,
            "return window.__notes.find((n) => n.body.startsWith('Rescheduled to'))",
            json!([]),
        )
        .await;
    assert_eq!(note["via"], "worker", "{note}");
    expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{booked_id}/cancel"),
            json!({}),
        )
        .await,
        200,
    )
    .await;
    b.wait_visible("#alerts li[data-kind='cancelled']", SECS_5)
        .await;
    let alerts = b.text("#alerts").await;
    assert!(
        alerts.contains("Cancelled:") && alerts.contains("Rescheduled to"),
        "{alerts}"
    );
    // A second booking for the screenshots and the week list.
    expect(app.book(&token, fx.doctor.id, slots[2], None).await, 201).await;
    b.wait_for(
        "two booking alerts",
        SECS_5,
        "return document.querySelectorAll(\"#alerts li[data-kind='booked']\").length === 2",
        json!([]),
    )
    .await;
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

    // And the one that ended without the patient: a no-show.
    let missed = format!("#today li[data-id='{missed_id}'] button.no-show");
    b.wait_visible(&missed, SECS_5).await;
    b.click(&missed).await;
    b.wait_visible(
        &format!("#today li.no_show[data-id='{missed_id}']"),
        SECS_10,
    )
    .await;
    assert_eq!(app.raw_status(missed_id).await.0, "no_show");

    // Two days back, the visit nobody marked: mark it there.
    b.click("#day-prev").await;
    b.click("#day-prev").await;
    let forgotten = format!("#today li[data-id='{forgotten_id}'] button.completed");
    b.wait_visible(&forgotten, SECS_10).await;
    let shown = (now - Span::days(2)).date_naive().to_string();
    assert_eq!(
        b.js(
            "return document.getElementById('day-pick').value",
            json!([])
        )
        .await,
        json!(shown)
    );
    b.click(&forgotten).await;
    b.wait_visible(
        &format!("#today li.completed[data-id='{forgotten_id}']"),
        SECS_10,
    )
    .await;
    assert_eq!(app.raw_status(forgotten_id).await.0, "completed");
    b.click("#day-today").await;
    b.wait_visible(&format!("#today li[data-id='{started_id}']"), SECS_10)
        .await;

    // German, from the one strings table; times still in the clinic zone.
    // A toast already on screen switches too.
    expect(app.book(&token, fx.doctor.id, slots[3], None).await, 201).await;
    b.wait_for(
        "the toast for the new booking",
        SECS_5,
        "return document.querySelectorAll('.toast').length >= 1",
        json!([]),
    )
    .await;
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
    let toasts = b
        .js(
            "return [...document.querySelectorAll('.toast')].map((t) => t.textContent)",
            json!([]),
        )
        .await;
    let toasts = toasts.as_array().unwrap();
    // Four alerts came in within seconds; two toasts at most cover the page.
    assert!((1..=2).contains(&toasts.len()), "{} toasts", toasts.len());
    for t in toasts {
        let t = t.as_str().unwrap();
        assert!(
            ["Neue Buchung:", "Abgesagt:", "Verschoben auf"]
                .iter()
                .any(|p| t.starts_with(p)),
            "a toast left in English: {t}"
        );
    }
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

    // The provider screen on a 360-px phone: no sideways scrolling.
    let phone = driver.session(360, 740).await;
    phone.goto(&app.url("/provider")).await;
    sign_in(&phone, &doctor_user.email).await;
    phone.wait_visible("#desk", SECS_10).await;
    phone.wait_visible("#chart-fill svg", SECS_10).await;
    phone.wait_visible("#today li[data-id]", SECS_10).await;
    assert_no_overflow(&phone, "provider at 360 px").await;
    phone.screenshot("provider-360").await;
    assert_clean_console(&phone, "provider (phone)").await;
    phone.close().await;
}

/// The names of the doctors the search lists, once they are exactly `want`.
async fn wait_for_doctors(b: &Browser, want: &[&str]) {
    b.wait_for(
        &format!("the doctors {want:?}"),
        SECS_5,
        "const names = [...document.querySelectorAll('#doctors li.doctor strong')].map((e) => e.textContent);
         return JSON.stringify(names) === JSON.stringify(arguments[0]);",
        json!([want]),
    )
    .await;
}

#[actix_web::test]
async fn the_search_form_finds_doctors_by_name_specialty_and_clinic() {
    let app = spawn_app().await;
    let north = app.clinic("Europe/Berlin", 0).await;
    let south = app.clinic("Europe/Berlin", 0).await;
    app.doctor_with(north, "Dr. Amara Okafor", "cardiology", "08:00", "16:00")
        .await;
    app.doctor_with(south, "Dr. Ben Weber", "dermatology", "08:00", "16:00")
        .await;
    let driver = Driver::start().await;
    let b = driver.session(1280, 900).await;
    b.goto(&format!("{}/", app.address)).await;
    wait_for_doctors(&b, &["Dr. Amara Okafor", "Dr. Ben Weber"]).await;
    let submit = "#search button[type=submit]";
    let clear =
        "['q-name', 'q-specialty'].forEach((id) => { document.getElementById(id).value = ''; });";

    // A fragment of the name, any case.
    b.type_into("#q-name", "okaf").await;
    b.click(submit).await;
    wait_for_doctors(&b, &["Dr. Amara Okafor"]).await;

    // A specialty (offered as a suggestion while typing).
    b.js(clear, json!([])).await;
    b.type_into("#q-specialty", "Dermatology").await;
    b.click(submit).await;
    wait_for_doctors(&b, &["Dr. Ben Weber"]).await;
    let offered = b
        .js(
            "return [...document.querySelectorAll('#specialties option')].map((o) => o.value)",
            json!([]),
        )
        .await;
    assert_eq!(offered, json!(["dermatology"]));

    // A clinic, picked from the list.
    b.js(clear, json!([])).await;
    b.click(&format!("#q-clinic option[value='{}']", north.0))
        .await;
    b.click(submit).await;
    wait_for_doctors(&b, &["Dr. Amara Okafor"]).await;
    b.click(&format!("#q-clinic option[value='{}']", south.0))
        .await;
    b.type_into("#q-specialty", "cardiology").await;
    b.click(submit).await;
    b.wait_visible("#doctors li.muted", SECS_5).await;
    assert_eq!(b.text("#doctors").await, "No doctors match.");
    b.screenshot("patient-search").await;
    assert_clean_console(&b, "search").await;
    b.close().await;
}

#[actix_web::test]
async fn a_new_patient_registers_mid_booking_then_books_a_suggestion_and_by_keyboard() {
    let app = spawn_app().await;
    let clinic = app.clinic("Europe/Berlin", 0).await;
    let fx = app
        .doctor_in(clinic, "Dr. Kim Keys", "07:00", "19:00")
        .await;
    let driver = Driver::start().await;
    let b = driver.session(1280, 900).await;
    open_doctor(&b, &app.address, fx.doctor.id.0).await;
    // Signed out: no suggestions yet, only the invitation to sign in.
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#suggestions button').length",
            json!([])
        )
        .await,
        0
    );

    // Pick a time, then register instead of signing in: the pick goes on.
    let first = slot_after(&b, 2).await;
    b.click(&slot_css(&first)).await;
    b.wait_visible("#signin-form", SECS_5).await;
    let email = format!("new-{}@test.example", Uuid::new_v4().simple());
    b.type_into("#email", &email).await;
    b.type_into("#password", "a-new-password-1").await;
    b.type_into("#reg-name", "Nora Newcomer").await;
    b.click("#register").await;
    b.wait_visible("#hold", SECS_10).await;
    assert!(
        b.js("return document.getElementById('signin').hidden", json!([]))
            .await
            == true
    );
    let when = plain(&b.text("#hold-when").await);
    assert!(
        when.ends_with(&shown_time(&first, chrono_tz::Europe::Berlin)),
        "{when}"
    );
    b.click("#hold-confirm").await;
    b.wait_visible("#appointments li.appointment.booked", SECS_10)
        .await;
    // The account is real: it signs in over the API and owns the visit.
    let t = expect(
        app.token(&[
            ("grant_type", "password"),
            ("username", &email),
            ("password", "a-new-password-1"),
        ])
        .await,
        200,
    )
    .await;
    let token = t["access_token"].as_str().unwrap().to_string();
    let mine = expect(app.get(&token, "/api/v1/appointments").await, 200).await;
    let mine = mine["appointments"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(
        mine[0]["start"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        first.parse::<chrono::DateTime<Utc>>().unwrap()
    );

    // Signed in: suggested times come first, above the week.
    b.wait_visible("#suggestions button.slot.suggested", SECS_10)
        .await;
    let order = b
        .js(
            "const s = [...document.querySelectorAll('#suggestions button.slot')];
             const w = document.querySelector('#week button.slot');
             return s.length > 0 && !!w
               && s.every((x) => x.compareDocumentPosition(w) & Node.DOCUMENT_POSITION_FOLLOWING)
               && document.querySelector('#suggestions').getBoundingClientRect().bottom
                  <= document.querySelector('#week').getBoundingClientRect().top;",
            json!([]),
        )
        .await;
    assert_eq!(order, true, "suggestions before the week grid");
    b.screenshot("patient-suggestions").await;
    let suggested: String = b
        .js(
            "return document.querySelector('#suggestions button.slot').dataset.start",
            json!([]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    b.click(&format!(
        "#suggestions button.slot[data-start='{suggested}']"
    ))
    .await;
    b.wait_visible("#hold", SECS_10).await;
    b.click("#hold-confirm").await;
    b.wait_for(
        "two booked appointments",
        SECS_10,
        "return document.querySelectorAll('#appointments li.appointment.booked').length === 2",
        json!([]),
    )
    .await;
    assert_booked_at(&app, &token, &suggested).await;

    // Keyboard only: Tab to a time in the week, Enter holds it, Enter
    // (the focus moved to "Confirm") books it.
    b.js(
        "document.activeElement?.blur(); window.scrollTo(0, 0);",
        json!([]),
    )
    .await;
    let mut reached = None;
    for _ in 0..80 {
        b.press("\u{E004}").await;
        let v = b
            .js(
                "const e = document.activeElement;
                 return e && e.matches('#week button.slot') ? e.dataset.start : null;",
                json!([]),
            )
            .await;
        if let Some(s) = v.as_str() {
            reached = Some(s.to_string());
            break;
        }
    }
    let keyed = reached.expect("Tab reaches a time in the week");
    // The focus ring: a dark ring at least 3:1 against the white day box.
    let ring = b
        .js(
            "const s = getComputedStyle(document.activeElement);
             return [s.outlineStyle, s.outlineWidth, s.outlineColor, s.boxShadow];",
            json!([]),
        )
        .await;
    assert_eq!(ring[0], "solid", "{ring}");
    let rgb: Vec<f64> = ring[2]
        .as_str()
        .unwrap()
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let lum = |c: &[f64]| {
        let f = |v: f64| {
            let v = v / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2])
    };
    let contrast = (1.0 + 0.05) / (lum(&rgb) + 0.05);
    assert!(
        contrast >= 3.0,
        "focus ring {ring}: {contrast:.2}:1 on white"
    );
    b.screenshot("patient-keyboard-focus").await;
    b.press("\u{E007}").await;
    b.wait_visible("#hold", SECS_10).await;
    assert_eq!(
        b.js("return document.activeElement.id", json!([])).await,
        "hold-confirm"
    );

    // A minute before the hold lapses, the message line says so (the
    // countdown itself is not read out every second).
    b.js(
        "const real = Date.now.bind(Date);
         window.__realNow = real;
         Date.now = () => real() + arguments[0] * 1000;",
        json!([250]),
    )
    .await;
    b.wait_for(
        "the one-minute warning",
        SECS_5,
        "const m = document.getElementById('message');
         return !m.hidden && !m.classList.contains('error') && m.textContent;",
        json!([]),
    )
    .await;
    assert_eq!(
        b.text("#message").await,
        "One minute left to confirm your booking."
    );
    assert_eq!(
        b.js(
            "return document.getElementById('message').getAttribute('role')",
            json!([])
        )
        .await,
        "alert"
    );
    b.js("Date.now = window.__realNow;", json!([])).await;
    b.press("\u{E007}").await;
    b.wait_for(
        "three booked appointments",
        SECS_10,
        "return document.querySelectorAll('#appointments li.appointment.booked').length === 3",
        json!([]),
    )
    .await;
    assert_booked_at(&app, &token, &keyed).await;
    assert_clean_console(&b, "register, suggestions, keyboard").await;
    b.close().await;
}

/// The patient behind `token` has a booked visit starting at `start`
/// (RFC 3339, as the page's `data-start`).
async fn assert_booked_at(app: &crate::helpers::TestApp, token: &str, start: &str) {
    let mine = expect(app.get(token, "/api/v1/appointments").await, 200).await;
    let start: chrono::DateTime<Utc> = start.parse().unwrap();
    assert!(
        mine["appointments"].as_array().unwrap().iter().any(|a| {
            a["status"] == "booked"
                && a["start"].as_str().and_then(|s| s.parse().ok()) == Some(start)
        }),
        "a booked visit at {start}: {mine}"
    );
}

#[actix_web::test]
async fn weeks_run_from_midnight_to_midnight_in_the_clinics_zone() {
    // UTC+14, the browser in Los Angeles: a week cut at UTC midnight (14:00
    // there) would put the next week's first morning on this page.
    let zone = chrono_tz::Pacific::Kiritimati;
    let app = spawn_app().await;
    let clinic = app.clinic("Pacific/Kiritimati", 0).await;
    let fx = app
        .doctor_in(clinic, "Dr. Kiri Timati", "08:00", "18:00")
        .await;
    let driver = Driver::start().await;
    let b = driver.session(1280, 1000).await;
    open_doctor(&b, &app.url(""), fx.doctor.id.0).await;
    let local_dates = |starts: serde_json::Value| -> Vec<chrono::NaiveDate> {
        starts
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_str()
                    .unwrap()
                    .parse::<chrono::DateTime<Utc>>()
                    .unwrap()
                    .with_timezone(&zone)
                    .date_naive()
            })
            .collect()
    };
    let starts =
        "return [...document.querySelectorAll('#week button.slot')].map((e) => e.dataset.start)";
    let today = Utc::now().with_timezone(&zone).date_naive();
    let next_week = today + Span::days(7);
    let page = local_dates(b.js(starts, json!([])).await);
    assert!(
        page.iter().all(|d| *d >= today && *d < next_week),
        "this week is today and the six days after it, in the clinic's zone: {page:?}"
    );

    b.click("#next-week").await;
    b.wait_for(
        "next week's slots",
        SECS_10,
        "return [...document.querySelectorAll('#week button.slot')].some((e) => Date.parse(e.dataset.start) > Date.now() + 6 * 86400e3)",
        json!([]),
    )
    .await;
    let first = b
        .js(
            "return [...document.querySelectorAll('#week button.slot')].map((e) => e.dataset.start).sort()[0]",
            json!([]),
        )
        .await;
    let first = first
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<Utc>>()
        .unwrap()
        .with_timezone(&zone);
    assert_eq!(
        (first.date_naive(), first.time()),
        (next_week, chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap()),
        "next week starts with the morning of its first day"
    );
    assert_clean_console(&b, "patient (far zone)").await;
    b.close().await;
}

//! Ranking latency: 500 candidate slots for a patient with 20 past visits.
//!
//! `cargo bench -p docspot-ml --bench rank`

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use docspot_ml::{Model, PastAppointment, RankQuery, TrainOptions, synthetic};

fn bench(c: &mut Criterion) {
    let now = Utc
        .with_ymd_and_hms(2025, 6, 2, 6, 0, 0)
        .single()
        .expect("valid date");
    let rows = synthetic::generate(500, 10_000, 1, now);
    let model = Model::train(&rows, &TrainOptions::default()).expect("training");
    let patient = rows[0].patient_id.clone();
    let history: Vec<PastAppointment> = rows
        .iter()
        .filter(|r| r.patient_id == patient)
        .cloned()
        .collect();
    // 500 half-hour slots over the next weeks, 08:00–18:00.
    let candidates: Vec<DateTime<Utc>> = (0..500)
        .map(|i| now + Duration::days(1 + i / 20) + Duration::minutes(120 + 30 * (i % 20)))
        .collect();
    let tz = chrono_tz::Europe::Berlin;

    c.bench_function("rank 500 candidates", |b| {
        b.iter(|| model.rank(black_box(&history), black_box(&candidates), now, tz))
    });
    c.bench_function("rank_query 500 candidates with doctor", |b| {
        b.iter(|| {
            model.rank_query(&RankQuery {
                history: black_box(&history),
                candidates: black_box(&candidates),
                now,
                tz,
                doctor_id: Some("doc-2"),
                visit_type: Some("checkup"),
            })
        })
    });
    c.bench_function("rank_earliest_first 500 candidates", |b| {
        b.iter(|| docspot_ml::rank_earliest_first(black_box(&candidates)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

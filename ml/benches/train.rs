//! Training time on a synthetic history (small sample size: each run trains
//! a full model). For the 100,000-appointment figure run the example
//! `train_100k`.
//!
//! `cargo bench -p docspot-ml --bench train`

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use docspot_ml::{Model, TrainOptions, synthetic};

fn bench(c: &mut Criterion) {
    let now = Utc
        .with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let rows = synthetic::generate(2_000, 20_000, 1, now);
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    group.bench_function("20k appointments", |b| {
        b.iter(|| Model::train(&rows, &TrainOptions::default()).expect("training"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

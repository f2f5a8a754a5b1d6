//! Trains on 100,000 synthetic appointments and prints how long it took.
//!
//! `cargo run --release -p docspot-ml --example train_100k`

use std::time::Instant;

use chrono::{TimeZone, Utc};
use docspot_ml::{Model, TrainOptions, synthetic};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = Utc
        .with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
        .single()
        .ok_or("date")?;
    let started = Instant::now();
    let rows = synthetic::generate(5_000, 100_000, 1, now);
    println!(
        "generated {} appointments in {:.2} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let model = Model::train(&rows, &TrainOptions::default())?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = model.to_bytes()?;
    println!(
        "trained on {} appointments in {seconds:.2} s",
        model.metrics.rows
    );
    println!(
        "features {}, choice sets {}, train ROC-AUC {:.3}, model file {} bytes",
        model.metrics.features,
        model.metrics.choice_sets,
        model.metrics.train_roc_auc,
        bytes.len()
    );
    Ok(())
}

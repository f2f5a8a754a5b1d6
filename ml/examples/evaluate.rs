//! Offline evaluation: `cargo run --release -p docspot-ml --example evaluate [-- history.csv [Europe/Berlin]]`.
//!
//! Without a path, evaluates on a synthetic history (2,000 patients, 40,000
//! appointments). Prints the table, then the report as JSON.

use chrono::{TimeZone, Utc};
use docspot_ml::{TrainOptions, evaluate, evaluate_csv, synthetic};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next();
    let mut options = TrainOptions::default();
    if let Some(tz) = args.next() {
        options.tz = tz.parse().map_err(|e| format!("time zone {tz:?}: {e}"))?;
    }
    let report = match path {
        Some(path) => evaluate_csv(std::fs::File::open(&path)?, &options)?,
        None => {
            let now = Utc
                .with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
                .single()
                .ok_or("date")?;
            evaluate(&synthetic::generate(2_000, 40_000, 1, now), &options)?
        }
    };
    println!("{}", report.table());
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

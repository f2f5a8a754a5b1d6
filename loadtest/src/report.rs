//! Results: one JSON object and one markdown row per scenario, plus the
//! targets each scenario is judged by.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{Args, procfs::CpuUse};

/// Above this share of one core, the generator may be what limits a run.
pub const GENERATOR_CPU_WARN_PCT: f64 = 70.0;

/// One target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is asked, e.g. "loser p99 ≤ 5 ms".
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met?
    pub met: bool,
}

/// The outcome of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name (`hot-slot`, …).
    pub name: String,
    /// Sizes it ran with.
    pub size: String,
    /// The main result in a line.
    pub headline: String,
    /// Main latency, "p50 / p99 ms".
    pub latency: String,
    /// CPU over the measured phase.
    pub cpu: CpuUse,
    /// Targets.
    pub targets: Vec<TargetCheck>,
    /// Everything measured.
    pub details: serde_json::Value,
    /// Remarks (reduced sizes, settings, warnings).
    pub notes: Vec<String>,
}

impl ScenarioResult {
    /// Adds the generator-CPU warning when it applies.
    pub fn warn_if_generator_busy(&mut self) {
        if self.cpu.generator_pct > GENERATOR_CPU_WARN_PCT {
            self.notes.push(format!(
                "WARNING: the load generator used {:.0} % of one core (> {GENERATOR_CPU_WARN_PCT:.0} %) \
                 on a 2-core machine shared with the server and PostgreSQL; it may have limited this run",
                self.cpu.generator_pct
            ));
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0} %"))
}

/// The markdown report: results table, targets table, notes.
pub fn markdown(results: &[ScenarioResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| scenario | size | result | latency p50 / p99 | generator CPU | server CPU | PostgreSQL CPU |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.size,
            r.headline,
            r.latency,
            pct(Some(r.cpu.generator_pct)),
            pct(r.cpu.server_pct),
            pct(Some(r.cpu.postgres_pct)),
        );
    }
    s.push_str("\nCPU: percent of one core over the measured phase (200 % = both cores).\n");
    s.push_str("\n| scenario | target | measured | met |\n| --- | --- | --- | --- |\n");
    for r in results {
        for t in &r.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.name,
                t.target,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            );
        }
    }
    let notes: Vec<_> = results
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| (r.name.as_str(), n)))
        .collect();
    if !notes.is_empty() {
        s.push('\n');
        for (name, n) in notes {
            let _ = writeln!(s, "* {name}: {n}");
        }
    }
    s
}

/// Writes `--json` and `--markdown` if asked.
pub fn write(args: &Args, results: &[ScenarioResult]) -> anyhow::Result<()> {
    if let Some(p) = &args.json {
        let doc = serde_json::json!({
            "generated_at": chrono::Utc::now().to_rfc3339(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "results": results,
        });
        std::fs::write(p, serde_json::to_string_pretty(&doc)?)?;
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, markdown(results))?;
    }
    Ok(())
}

//! Keeps the load generator working: every scenario at tiny sizes against a
//! spawned debug `docspot`, pgbench baseline included, in a few seconds.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 and fails
//! (does not skip) when either is unreachable.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ has a parent")
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR/debug/docspot` (relative to the workspace when the
/// variable is relative), else `../target/debug/docspot`; built first when
/// missing.
fn server_binary() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    let bin = target.join("debug").join("docspot");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "docspot", "--bin", "docspot"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build -p docspot");
        assert!(status.success(), "cargo build -p docspot failed");
    }
    assert!(bin.is_file(), "no server binary at {}", bin.display());
    bin
}

fn require(addr: &str, what: &str) {
    let sock = addr.parse().expect("address");
    if let Err(e) = TcpStream::connect_timeout(&sock, Duration::from_secs(3)) {
        panic!(
            "{what} at {addr} is unreachable ({e}); the load test smoke test needs it (scripts/test starts it)"
        );
    }
}

#[test]
fn every_scenario_runs_at_tiny_sizes() {
    require("127.0.0.1:5432", "PostgreSQL");
    require("127.0.0.1:6379", "Redis");
    let server = server_binary();
    let dir = std::env::temp_dir().join(format!("docspot_loadtest_smoke_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("results.json");
    let md = dir.join("results.md");
    let out = Command::new(env!("CARGO_BIN_EXE_docspot-loadtest"))
        .arg("all")
        .arg("--spawn")
        .arg("--server-bin")
        .arg(&server)
        .args(["--clients", "40", "--slots", "4"])
        .args(["--doctors", "4", "--duration", "1", "--concurrency", "8"])
        .args(["--watchers", "50", "--rate", "10", "--push-secs", "1"])
        .args(["--idle", "200", "--idle-hold-secs", "1"])
        .args(["--cross-watchers", "10", "--patients", "3"])
        .args(["--pgbench-max-clients", "8", "--connect-parallelism", "32"])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .output()
        .expect("running docspot-loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "docspot-loadtest failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
        .expect("valid JSON");
    let results = doc["results"].as_array().expect("results");
    let by = |name: &str| {
        results
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} result in {doc}"))
            .clone()
    };

    let hot = &by("hot-slot")["details"];
    assert_eq!(hot["winners"], 4, "{hot}");
    assert_eq!(hot["slot_taken"], 36, "{hot}");
    assert_eq!(hot["server_errors"], 0, "{hot}");
    assert_eq!(hot["overlaps"], 0, "{hot}");
    assert_eq!(
        hot["pgbench"]["inserted"], 4,
        "pgbench fills exactly the M slots: {hot}"
    );

    let tp = &by("throughput")["details"];
    assert!(tp["created"].as_u64().unwrap() > 0, "{tp}");
    assert_eq!(
        tp["created"], tp["rows_booked"],
        "every 201 is durable: {tp}"
    );
    assert_eq!(tp["server_errors"], 0, "{tp}");
    assert!(tp["pgbench"]["tps"].as_f64().unwrap() > 0.0, "{tp}");

    let fan = &by("fanout")["details"];
    assert_eq!(fan["ready"], 50, "{fan}");
    assert_eq!(fan["bookings_201"], 10, "{fan}");
    assert_eq!(fan["deltas_delivered"], fan["deltas_expected"], "{fan}");
    assert!(
        fan["commit_to_receipt"]["n"].as_u64().unwrap() == 500,
        "{fan}"
    );
    // Measured from the server's commit instant `at`: never before the
    // request went out, never negative.
    assert_eq!(fan["deltas_without_commit_instant"], 0, "{fan}");
    assert_eq!(fan["clock_anomalies"], 0, "{fan}");
    assert!(
        fan["commit_to_receipt"]["p50_ms"].as_f64().unwrap() >= 0.0,
        "{fan}"
    );

    let idle = &by("idle")["details"];
    assert_eq!(idle["ready"], 200, "{idle}");
    assert!(idle["server_kib_per_connection"].is_number(), "{idle}");

    let cross = &by("cross-node")["details"];
    assert_eq!(cross["delivered_b"], cross["expected_b"], "{cross}");
    assert_eq!(cross["expected_b"], 100, "{cross}");
    assert!(
        cross["added_b_minus_a"]["n"].as_u64().unwrap() == 100,
        "{cross}"
    );
    assert_eq!(cross["deltas_without_commit_instant"], 0, "{cross}");
    for node in ["a", "b"] {
        let l = &cross[format!("{node}_commit_to_receipt")];
        assert_eq!(l["n"], 100, "{cross}");
        assert!(l["p50_ms"].as_f64().unwrap() >= 0.0, "{cross}");
        // One node watched at a time: every watcher got every delta.
        let alone = &cross[format!("alone_{node}")];
        assert_eq!(alone["delivered"], 100, "{cross}");
        let l = &cross[format!("alone_{node}_commit_to_receipt")];
        assert_eq!(l["n"], 100, "{cross}");
        assert!(l["p50_ms"].as_f64().unwrap() >= 0.0, "{cross}");
    }
    assert!(cross["added_alone_p99_ms"].is_f64(), "{cross}");

    let table = std::fs::read_to_string(&md).expect("markdown written");
    for name in ["hot-slot", "throughput", "fanout", "idle", "cross-node"] {
        assert!(
            table.contains(&format!("| {name} |")),
            "{name} row in\n{table}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

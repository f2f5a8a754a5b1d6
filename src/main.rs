//! The `docspot` command: serve, migrate, seed the demo, manage admins.

use anyhow::Context;
use clap::{Parser, Subcommand};
use docspot::{
    auth::hash_password,
    config::Settings,
    demo,
    domain::{Email, Password, Role},
    startup::{Application, open_store},
    store::NewUser,
    telemetry,
};
use docspot_actors::domain::ClinicId;

#[derive(Parser)]
#[command(
    name = "docspot",
    version,
    about = "Real-time doctor appointment booking server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve {
        /// Do not seed the demo clinic into an empty store.
        #[arg(long)]
        no_demo: bool,
    },
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Seed the demo clinic (doctors, hours, patients, past appointments).
    Demo {
        /// How many past appointments to generate.
        #[arg(long, default_value_t = 5000)]
        past: usize,
    },
    /// Manage admin accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Train the suggestion model from the database (kept only if it
    /// validates no worse than the model in use).
    Train,
    /// Suggestion-model tools.
    Ml {
        #[command(subcommand)]
        command: MlCommand,
    },
    /// Audit-log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Field encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit chain: gapless seqs, every prev_hash and hash, and
    /// the head. Exits non-zero at the first break.
    Verify {
        /// Entries read per query.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-encrypt every encrypted field under security.active_encryption_key
    /// (old keys must still be configured). Works in batches, each its own
    /// transaction; safe to interrupt and rerun: it continues where it
    /// stopped. Remove an old key from the configuration only after a
    /// complete run.
    Rotate {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
        /// Stop after this many batches (run again to continue).
        #[arg(long)]
        max_batches: Option<u64>,
    },
}

#[derive(Subcommand)]
enum MlCommand {
    /// Export DocSpot's own past visits (with the alternatives the patient
    /// was shown) as a CSV that `docspot ml evaluate` reads.
    Export {
        /// Where to write.
        #[arg(long)]
        csv: std::path::PathBuf,
    },
    /// Evaluate on a CSV of past appointments (columns: patient_id,
    /// booked_at, slot_start, attended; optional doctor_id, visit_type, age,
    /// sex and any patient feature columns): time split 80/20, ROC-AUC and
    /// Brier against a lead-time baseline, ranking metrics where alternatives
    /// were offered.
    Evaluate {
        /// The CSV file.
        #[arg(long)]
        csv: std::path::PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// IANA zone for hours and weekdays of naive or UTC times.
        #[arg(long, default_value = "UTC")]
        tz: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a clinic admin (without --clinic: a platform admin).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
        #[arg(long)]
        clinic: Option<String>,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load().context("loading configuration")?;
    telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve { no_demo: false }) {
        Command::Serve { no_demo } => {
            if no_demo {
                settings.demo.seed_on_start = Some(false);
            }
            let app = Application::build(settings.clone())
                .await
                .context("starting DocSpot")?;
            let scheme = if settings.http.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            let url = format!("{scheme}://{}", settings.listen);
            println!(
                "DocSpot is serving on {url}\n  doctors:  {url}/api/v1/doctors\n  \
                 API docs: {url}/api/v1/openapi.json\n  \
                 demo sign-in (when seeded): patient1@demo.docspot.test / {}",
                demo::DEMO_PASSWORD
            );
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Train => {
            let store = open_store(&settings, true).await?;
            let suggester = docspot::suggest::Suggester::load(&settings.ml.model_path);
            let r = docspot::suggest::train(
                store.as_ref(),
                &suggester,
                settings.ml.max_training_rows,
                settings.ml.min_training_rows,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            if r.installed {
                println!("model written to {}", settings.ml.model_path.display());
            } else {
                println!("kept the model in use: the new one validated worse");
            }
        }
        Command::Ml {
            command: MlCommand::Export { csv },
        } => {
            let store = open_store(&settings, true).await?;
            let rows: Vec<_> = store
                .past_outcomes(settings.ml.max_training_rows)
                .await?
                .iter()
                .filter(|v| docspot::suggest::has_outcome(&v.appointment))
                .map(docspot::suggest::past_visit)
                .collect();
            let file = std::fs::File::create(&csv)
                .with_context(|| format!("creating {}", csv.display()))?;
            docspot_ml::write_csv(&rows, std::io::BufWriter::new(file))?;
            println!("wrote {} past visits to {}", rows.len(), csv.display());
        }
        Command::Ml {
            command: MlCommand::Evaluate { csv, json, tz },
        } => {
            let tz: chrono_tz::Tz = tz
                .parse()
                .map_err(|_| anyhow::anyhow!("--tz {tz:?} is not an IANA time zone"))?;
            let file =
                std::fs::File::open(&csv).with_context(|| format!("opening {}", csv.display()))?;
            let options = docspot_ml::TrainOptions {
                tz,
                ..Default::default()
            };
            let report = docspot_ml::evaluate_csv(std::io::BufReader::new(file), &options)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.table());
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { batch },
        } => {
            // Reads the audit tables only: an auditor needs neither the
            // field-encryption keys nor to migrate anything.
            let backend = settings.backend().map_err(|e| anyhow::anyhow!(e))?;
            let store = docspot::audit::open(&backend)?;
            match docspot::audit::verify(store.as_ref(), batch).await? {
                docspot::audit::Verdict::Ok { count, head_hash } => {
                    println!("audit chain OK: {count} entries, head hash {head_hash}");
                    // Records of committed changes the server has not
                    // chained yet (it does within a second while running).
                    // (A database from before the outbox has none: say nothing.)
                    let pending = store.pending().await.unwrap_or(0);
                    if pending > 0 {
                        println!("{pending} more records wait in the outbox to be chained");
                    }
                }
                docspot::audit::Verdict::Broken { seq, reason } => {
                    eprintln!("audit chain BROKEN at seq {seq}: {reason}");
                    std::process::exit(2);
                }
            }
        }
        Command::Keys {
            command: KeysCommand::Rotate { batch, max_batches },
        } => {
            let store = open_store(&settings, true).await?;
            let r = docspot::privacy::rotate_keys(store.as_ref(), batch, max_batches).await?;
            for t in &r.tables {
                println!(
                    "{:<20} scanned {:>8}  re-encrypted {:>8}",
                    t.table.table(),
                    t.scanned,
                    t.rewritten
                );
            }
            if r.complete {
                println!("done: every encrypted field is under the active key");
            } else {
                println!(
                    "stopped after {} batches: run again to continue",
                    max_batches.unwrap_or_default()
                );
            }
        }
        Command::Migrate => {
            open_store(&settings, true).await?;
            println!("database is up to date");
        }
        Command::Demo { past } => {
            let store = open_store(&settings, true).await?;
            let r = demo::seed(store.as_ref(), past).await?;
            if r.already_seeded {
                println!("the demo clinic exists already; nothing to do");
            } else {
                println!(
                    "seeded {} doctors, {} patients and {} past appointments\n\
                     sign in as admin@demo.docspot.test, doctor1@demo.docspot.test or \
                     patient1@demo.docspot.test with password {:?}",
                    r.doctors,
                    r.patients,
                    r.past_appointments,
                    demo::DEMO_PASSWORD
                );
            }
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    password,
                    name,
                    clinic,
                },
        } => {
            let store = open_store(&settings, true).await?;
            let email = Email::parse(&email)?;
            let password = Password::parse(&password)?;
            let clinic_id = clinic.as_deref().map(ClinicId::parse).transpose()?;
            let password_hash =
                hash_password(password.expose()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let user = store
                .create_user(NewUser {
                    email,
                    name,
                    role: Role::ClinicAdmin,
                    doctor_id: None,
                    clinic_id,
                    password_hash,
                })
                .await?;
            println!("created admin {} ({})", user.email, user.id);
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
    tracing::info!("shutting down");
}

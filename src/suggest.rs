//! Suggested appointment times: the free slots of the calendar's live view,
//! ranked for one patient by the `docspot-ml` model (probability they pick
//! the slot × probability they turn up), with earliest-first as the fallback
//! whenever there is no usable model.
//!
//! The model lives in a file (`ml.model_path`). Training (on demand with
//! `docspot train`, or on a schedule inside the server) builds a candidate on
//! the earlier 80 % of past visits, validates it and the current model on the
//! latest 20 %, and only replaces the current one when the candidate is no
//! worse; the winner is then retrained on everything, written atomically and
//! swapped in without a restart.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use chrono_tz::Tz;
use docspot_actors::domain::{Appointment, AppointmentStatus};
use docspot_ml::{Model, PastAppointment, TrainOptions, Validation, split_by_time};

use crate::store::{PastVisit, Store};

/// Why training did not produce a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Not enough past visits with a known outcome.
    #[error("only {found} past visits with a known outcome; at least {needed} are needed")]
    TooFewRows {
        /// Rows found.
        found: usize,
        /// Rows needed.
        needed: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] docspot_actors::store::StoreError),
    /// The learner failed.
    #[error(transparent)]
    Model(#[from] docspot_ml::ModelError),
    /// The model file could not be written.
    #[error("model file: {0}")]
    Io(#[from] std::io::Error),
    /// The training thread died.
    #[error("training was interrupted: {0}")]
    Join(String),
}

/// A past visit as the learner sees it, with the alternatives it was booked
/// from (when the suggestions endpoint showed some).
pub fn past_visit(v: &PastVisit) -> PastAppointment {
    PastAppointment {
        offered: v.offered.clone(),
        ..past_appointment(&v.appointment)
    }
}

/// A past visit as the learner sees it.
pub fn past_appointment(a: &Appointment) -> PastAppointment {
    PastAppointment {
        patient_id: a.patient_id.to_string(),
        doctor_id: Some(a.doctor_id.to_string()),
        visit_type: Some(a.visit_type_id.to_string()),
        booked_at: a.created_at,
        slot_start: a.time.start(),
        attended: a.status == AppointmentStatus::Completed,
        age: None,
        sex: None,
        extra: Default::default(),
        offered: Vec::new(),
    }
}

/// Only visits with a known outcome teach anything.
pub fn has_outcome(a: &Appointment) -> bool {
    matches!(
        a.status,
        AppointmentStatus::Completed | AppointmentStatus::NoShow
    )
}

/// The model in use, swappable while requests read it.
pub struct Suggester {
    path: PathBuf,
    model: RwLock<Option<Arc<Model>>>,
}

impl Suggester {
    /// Loads the model file if there is one. A corrupt or incompatible file
    /// is reported and ignored: suggestions fall back to earliest-first
    /// rather than failing requests.
    pub fn load(path: &Path) -> Self {
        let model = match std::fs::read(path) {
            Ok(bytes) => match Model::from_bytes(&bytes) {
                Ok(m) => {
                    tracing::info!(path = %path.display(), rows = m.metrics.rows, "suggestion model loaded");
                    Some(Arc::new(m))
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable suggestion model; ranking earliest-first");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read suggestion model; ranking earliest-first");
                None
            }
        };
        Suggester {
            path: path.to_path_buf(),
            model: RwLock::new(model),
        }
    }

    /// The model in use, if any.
    pub fn current(&self) -> Option<Arc<Model>> {
        self.model.read().map(|m| m.clone()).unwrap_or(None)
    }

    /// Writes `model` atomically (temp file + rename) and swaps it in.
    pub fn install(&self, model: Model) -> Result<(), TrainError> {
        let bytes = model.to_bytes()?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)?;
        if let Ok(mut m) = self.model.write() {
            *m = Some(Arc::new(model));
        }
        Ok(())
    }
}

/// What a training run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    /// Past visits used.
    pub rows: usize,
    /// The candidate on the latest 20 %.
    pub candidate: Validation,
    /// The model in use on the same rows, if there was one.
    pub current: Option<Validation>,
    /// Whether the candidate replaced the model in use.
    pub installed: bool,
    /// Seconds spent.
    pub seconds: f64,
}

/// The zone hours and weekdays are learned in: the clinics' zone when they
/// share one, else UTC.
async fn training_zone(store: &dyn Store) -> Tz {
    let zones: std::collections::HashSet<String> = store
        .clinics()
        .await
        .map(|c| c.into_iter().map(|c| c.time_zone).collect())
        .unwrap_or_default();
    match (zones.len(), zones.iter().next()) {
        (1, Some(z)) => z.parse().unwrap_or(Tz::UTC),
        _ => Tz::UTC,
    }
}

/// Trains from the store and installs the result unless it validates worse
/// than the model in use.
pub async fn train(
    store: &dyn Store,
    suggester: &Suggester,
    max_rows: i64,
    min_rows: usize,
) -> Result<TrainReport, TrainError> {
    let started = std::time::Instant::now();
    let rows: Vec<PastAppointment> = store
        .past_outcomes(max_rows)
        .await?
        .iter()
        .filter(|v| has_outcome(&v.appointment))
        .map(past_visit)
        .collect();
    if rows.len() < min_rows.max(20) {
        return Err(TrainError::TooFewRows {
            found: rows.len(),
            needed: min_rows.max(20),
        });
    }
    let options = TrainOptions {
        tz: training_zone(store).await,
        ..Default::default()
    };
    let current = suggester.current();
    // Training is CPU-bound: keep it off the async workers.
    let (candidate_v, current_v, final_model) = tokio::task::spawn_blocking(move || {
        let (early, late) = split_by_time(&rows, 0.8);
        let candidate = Model::train(&early, &options)?;
        let candidate_v = candidate.validate(&early, &late);
        let current_v = current.as_ref().map(|m| m.validate(&early, &late));
        let better = current_v
            .as_ref()
            .is_none_or(|cur| candidate_v.is_no_worse_than(cur, 0.005));
        let final_model = if better {
            Some(Model::train(&rows, &options)?)
        } else {
            None
        };
        Ok::<_, TrainError>((candidate_v, current_v, final_model))
    })
    .await
    .map_err(|e| TrainError::Join(e.to_string()))??;
    let installed = final_model.is_some();
    let rows = final_model
        .as_ref()
        .map_or(candidate_v.rows, |m| m.metrics.rows);
    if let Some(m) = final_model {
        suggester.install(m)?;
    }
    Ok(TrainReport {
        rows,
        candidate: candidate_v,
        current: current_v,
        installed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

//! The two learned parts and the model file.
//!
//! * [`AttendanceModel`]: P(show) for a booking, a logistic regression over
//!   the [`FeatureSpec`] vector.
//! * [`PreferenceModel`]: how much a patient wants one slot over the others.
//!   With recorded choices (rows with `offered` alternatives) it is a logistic
//!   regression of "this option was the one picked" over per-option features,
//!   used as a conditional-logit utility; without them it is a smoothed
//!   frequency model of the patient's past hours and weekdays.
//!
//! Both logistic regressions are fitted with `linfa-logistic` on standardized
//! columns; the standardization is then folded into plain weight vectors, so
//! the stored model is small, fast to apply and independent of linfa's types.

use std::time::Instant;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use linfa::{Dataset, traits::Fit};
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, Axis, ShapeBuilder};
use serde::{Deserialize, Serialize};

use crate::{
    data::PastAppointment,
    features::{Context, FeatureSpec, History, PREFERENCE_DIM, PREFERENCE_NAMES, SlotTime},
    metrics,
};

/// Version of the model file layout this build writes and reads.
pub const MODEL_VERSION: u32 = 1;

/// Fewest recorded choices (bookings with alternatives) needed to learn a
/// choice model instead of falling back to frequencies.
const MIN_CHOICE_SETS: usize = 30;

/// Most recorded choices the preference part learns from (the latest ones).
/// It has only a dozen weights: on the synthetic data 1,000 choices rank as
/// well as 40,000, and the cap keeps training time flat.
const MAX_CHOICE_SETS: usize = 5_000;

/// Why training, saving or loading a model failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The bytes are not a model file (truncated, another format, or
    /// inconsistent contents).
    #[error("model file is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by a build with another layout.
    #[error("model file has version {found}, this build reads version {expected}")]
    IncompatibleVersion {
        /// Version found in the file.
        found: u32,
        /// Version this build reads ([`MODEL_VERSION`]).
        expected: u32,
    },
    /// Encoding the model failed.
    #[error("could not encode the model: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// There are no rows to learn from.
    #[error("no appointments to train on")]
    NoData,
    /// The solver failed.
    #[error("training failed: {0}")]
    Training(String),
}

/// Knobs for [`Model::train`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Time zone in which slot hours and weekdays are taken (default UTC).
    pub tz: Tz,
    /// Iteration cap of the L-BFGS solver (default 100).
    pub max_iterations: u64,
    /// L2 penalty on the standardized weights (default 1.0; the loss is summed
    /// over rows, so this matters only for small data).
    pub l2: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            tz: Tz::UTC,
            max_iterations: 100,
            l2: 1.0,
        }
    }
}

/// A linear scorer `w·x + b` over raw (unstandardized) feature vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Linear {
    weights: Vec<f64>,
    intercept: f64,
}

impl Linear {
    /// Fits a logistic regression of `y` on the rows of `x`.
    pub(crate) fn fit(
        mut x: Array2<f64>,
        y: &[bool],
        options: &TrainOptions,
    ) -> Result<Self, ModelError> {
        let positives = y.iter().filter(|&&v| v).count();
        if positives == 0 || positives == y.len() {
            // One class only: a constant, slightly pulled toward ½.
            let rate = (positives as f64 + 0.5) / (y.len() as f64 + 1.0);
            return Ok(Self {
                weights: vec![0.0; x.ncols()],
                intercept: (rate / (1.0 - rate)).ln(),
            });
        }
        let mean = x
            .mean_axis(Axis(0))
            .unwrap_or_else(|| Array1::zeros(x.ncols()));
        let mut std = x.std_axis(Axis(0), 0.0);
        std.mapv_inplace(|s| if s > 1e-9 { s } else { 1.0 });
        x -= &mean;
        x /= &std;
        // Column-major: linfa's gradient multiplies by the transpose, which
        // is then contiguous (about 3× faster on 100k rows).
        let mut columns = Array2::zeros(x.raw_dim().f());
        columns.assign(&x);
        drop(x);
        let x = columns;
        let targets: Array1<bool> = y.iter().copied().collect();
        let fitted = LogisticRegression::default()
            .alpha(options.l2)
            .max_iterations(options.max_iterations)
            .fit(&Dataset::new(x, targets))
            .map_err(|e| ModelError::Training(e.to_string()))?;
        // linfa reports P(larger class), which is the more frequent label.
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let mut intercept = sign * fitted.intercept();
        let weights: Vec<f64> = fitted
            .params()
            .iter()
            .zip(mean.iter().zip(std.iter()))
            .map(|(w, (m, s))| {
                let w = sign * w / s;
                intercept -= w * m;
                w
            })
            .collect();
        if !intercept.is_finite() || weights.iter().any(|w| !w.is_finite()) {
            return Err(ModelError::Training("non-finite weights".into()));
        }
        Ok(Self { weights, intercept })
    }

    /// The linear score (log-odds).
    pub(crate) fn score(&self, x: &[f64]) -> f64 {
        self.intercept + self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }

    /// The logistic of the score.
    pub(crate) fn probability(&self, x: &[f64]) -> f64 {
        1.0 / (1.0 + (-self.score(x)).exp())
    }

    fn dim(&self) -> usize {
        self.weights.len()
    }
}

/// P(show): the probability that a booking is attended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttendanceModel {
    pub(crate) linear: Linear,
}

/// How a [`PreferenceModel`] was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreferenceSource {
    /// From recorded choices among offered alternatives.
    Choices,
    /// From the patient's own hour and weekday frequencies (no choices were
    /// recorded).
    Frequencies,
}

/// P(patient picks this slot among the candidates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceModel {
    pub(crate) choice: Option<Linear>,
}

impl PreferenceModel {
    /// Where the model came from.
    pub fn source(&self) -> PreferenceSource {
        if self.choice.is_some() {
            PreferenceSource::Choices
        } else {
            PreferenceSource::Frequencies
        }
    }

    /// Utility of one option (higher = more likely to be picked); the
    /// probabilities are the softmax of these over the candidates.
    pub(crate) fn utility(&self, x: &[f64; PREFERENCE_DIM]) -> f64 {
        match &self.choice {
            Some(linear) => linear.score(x),
            // ln(hour affinity) + ln(weekday affinity): a product of the
            // patient's smoothed hour and weekday frequencies.
            None => x[1] + x[5],
        }
    }
}

/// What training saw and how well the model fits its own training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    /// Appointments trained on.
    pub rows: usize,
    /// Share of no-shows among them.
    pub no_show_rate: f64,
    /// ROC-AUC of P(show) on the training rows (in-sample).
    pub train_roc_auc: f64,
    /// Brier score of P(show) on the training rows (in-sample).
    pub train_brier: f64,
    /// How the preference part was learned.
    pub preference: PreferenceSource,
    /// Bookings with alternatives the preference part learned from.
    pub choice_sets: usize,
    /// Length of the attendance feature vector.
    pub features: usize,
    /// Wall-clock training time.
    pub seconds: f64,
}

/// A trained suggestion model: attendance and preference parts plus the
/// feature layout they expect. Save with [`Model::to_bytes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// File layout version ([`MODEL_VERSION`] when written by this build).
    pub version: u32,
    /// When training finished.
    pub trained_at: DateTime<Utc>,
    /// How feature vectors are built.
    pub spec: FeatureSpec,
    /// P(show).
    pub attendance: AttendanceModel,
    /// P(pick).
    pub preference: PreferenceModel,
    /// Numbers from training.
    pub metrics: TrainingMetrics,
}

/// Only the version, read before the rest so that an old or newer file gives
/// a clear error rather than a decoding failure.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

impl Model {
    /// Learns a model from past appointments (any order). Patient-history
    /// features of each row use only that patient's appointments which
    /// started before the row was booked.
    pub fn train(rows: &[PastAppointment], options: &TrainOptions) -> Result<Self, ModelError> {
        let started = Instant::now();
        if rows.is_empty() {
            return Err(ModelError::NoData);
        }
        let tz = options.tz;
        let spec = FeatureSpec::learn(rows, tz);
        let histories = History::snapshots(rows, tz);

        let x = attendance_matrix(&spec, rows, &histories, tz);
        let y: Vec<bool> = rows.iter().map(|r| r.attended).collect();
        let attendance = AttendanceModel {
            linear: Linear::fit(x, &y, options)?,
        };

        let (px, py, choice_sets) = preference_matrix(&spec, rows, &histories, tz);
        let preference = PreferenceModel {
            choice: if choice_sets >= MIN_CHOICE_SETS {
                Some(Linear::fit(px, &py, options)?)
            } else {
                None
            },
        };

        let probabilities = predict_show(&spec, &attendance, rows, &histories, tz);
        let metrics = TrainingMetrics {
            rows: rows.len(),
            no_show_rate: spec.population_no_show_rate(),
            train_roc_auc: metrics::roc_auc(&probabilities, &y).unwrap_or(f64::NAN),
            train_brier: metrics::brier(&probabilities, &y),
            preference: preference.source(),
            choice_sets,
            features: spec.dim(),
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok(Self {
            version: MODEL_VERSION,
            trained_at: Utc::now(),
            spec,
            attendance,
            preference,
            metrics,
        })
    }

    /// The model file: MessagePack with field names.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(rmp_serde::to_vec_named(self)?)
    }

    /// Reads a model file written by [`Model::to_bytes`], refusing other
    /// versions and inconsistent contents.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let header: Header =
            rmp_serde::from_slice(bytes).map_err(|e| ModelError::Corrupt(e.to_string()))?;
        if header.version != MODEL_VERSION {
            return Err(ModelError::IncompatibleVersion {
                found: header.version,
                expected: MODEL_VERSION,
            });
        }
        let model: Self =
            rmp_serde::from_slice(bytes).map_err(|e| ModelError::Corrupt(e.to_string()))?;
        model.spec.check().map_err(ModelError::Corrupt)?;
        if model.attendance.linear.dim() != model.spec.dim() {
            return Err(ModelError::Corrupt(format!(
                "attendance weights have {} columns, the feature layout {}",
                model.attendance.linear.dim(),
                model.spec.dim()
            )));
        }
        if let Some(choice) = &model.preference.choice
            && choice.dim() != PREFERENCE_DIM
        {
            return Err(ModelError::Corrupt(format!(
                "preference weights have {} columns, expected {PREFERENCE_DIM}",
                choice.dim()
            )));
        }
        Ok(model)
    }

    /// The attendance weights by feature name, in raw feature units (the
    /// log-odds of showing up change by the weight per unit).
    pub fn attendance_weights(&self) -> Vec<(&str, f64)> {
        self.spec
            .feature_names()
            .iter()
            .map(String::as_str)
            .zip(self.attendance.linear.weights.iter().copied())
            .collect()
    }

    /// The preference weights by feature name (empty for the frequency
    /// model).
    pub fn preference_weights(&self) -> Vec<(&'static str, f64)> {
        self.preference.choice.as_ref().map_or_else(Vec::new, |c| {
            PREFERENCE_NAMES
                .iter()
                .copied()
                .zip(c.weights.iter().copied())
                .collect()
        })
    }

    /// P(show) of each row given its patient's history at booking time.
    pub(crate) fn show_probabilities(
        &self,
        rows: &[PastAppointment],
        histories: &[History],
        tz: Tz,
    ) -> Vec<f64> {
        predict_show(&self.spec, &self.attendance, rows, histories, tz)
    }
}

fn predict_show(
    spec: &FeatureSpec,
    attendance: &AttendanceModel,
    rows: &[PastAppointment],
    histories: &[History],
    tz: Tz,
) -> Vec<f64> {
    rows.iter()
        .zip(histories)
        .map(|(r, h)| {
            let mut b = spec.builder(&Context::of(r));
            b.set_slot(h, r.booked_at, SlotTime::new(r.slot_start, tz));
            attendance.linear.probability(&b.row)
        })
        .collect()
}

/// One attendance vector per row.
pub(crate) fn attendance_matrix(
    spec: &FeatureSpec,
    rows: &[PastAppointment],
    histories: &[History],
    tz: Tz,
) -> Array2<f64> {
    let mut x = Array2::zeros((rows.len(), spec.dim()));
    for ((r, h), mut out) in rows.iter().zip(histories).zip(x.rows_mut()) {
        let mut b = spec.builder(&Context::of(r));
        b.set_slot(h, r.booked_at, SlotTime::new(r.slot_start, tz));
        out.assign(&ndarray::ArrayView1::from(&b.row));
    }
    x
}

/// One preference vector per option of the latest (at most
/// [`MAX_CHOICE_SETS`]) rows with alternatives, labelled with whether it was
/// the one picked; and the number of such rows.
fn preference_matrix(
    spec: &FeatureSpec,
    rows: &[PastAppointment],
    histories: &[History],
    tz: Tz,
) -> (Array2<f64>, Vec<bool>, usize) {
    let mut chosen: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].offered.iter().any(|&o| o != rows[i].slot_start))
        .collect();
    chosen.sort_by_key(|&i| std::cmp::Reverse(rows[i].booked_at));
    chosen.truncate(MAX_CHOICE_SETS);
    let mut data = Vec::new();
    let mut labels = Vec::new();
    let sets = chosen.len();
    let mut v = [0.0; PREFERENCE_DIM];
    for (r, h) in chosen.into_iter().map(|i| (&rows[i], &histories[i])) {
        let set = r.choice_set();
        for &option in &set {
            let slot = SlotTime::new(option, tz);
            spec.preference_row(h, r.doctor_id.as_deref(), r.booked_at, slot, set[0], &mut v);
            data.extend_from_slice(&v);
            labels.push(option == r.slot_start);
        }
    }
    let n = labels.len();
    let x = Array2::from_shape_vec((n, PREFERENCE_DIM), data)
        .unwrap_or_else(|_| Array2::zeros((0, PREFERENCE_DIM)));
    (x, labels, sets)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::synthetic;

    fn small_model() -> Model {
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let rows = synthetic::generate(60, 1_500, 7, now);
        Model::train(&rows, &TrainOptions::default()).unwrap()
    }

    #[test]
    fn model_file_round_trip() {
        let model = small_model();
        assert_eq!(model.preference.source(), PreferenceSource::Choices);
        let bytes = model.to_bytes().unwrap();
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn corrupt_model_file_is_a_typed_error() {
        let bytes = small_model().to_bytes().unwrap();
        for bad in [&b"not a model"[..], &bytes[..bytes.len() / 2], &[]] {
            assert!(
                matches!(Model::from_bytes(bad), Err(ModelError::Corrupt(_))),
                "{bad:?}"
            );
        }
        // Well-formed MessagePack with the right version but wrong contents.
        let mut model = small_model();
        model.attendance.linear.weights.pop();
        let err = Model::from_bytes(&model.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt(_)), "{err}");
        let mut model = small_model();
        model.spec.names.pop();
        model.attendance.linear.weights.pop();
        let err = Model::from_bytes(&model.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt(_)), "{err}");
    }

    #[test]
    fn wrong_model_version_is_a_typed_error() {
        let mut model = small_model();
        model.version = MODEL_VERSION + 1;
        let err = Model::from_bytes(&model.to_bytes().unwrap()).unwrap_err();
        assert!(
            matches!(err, ModelError::IncompatibleVersion { found, expected }
                if found == MODEL_VERSION + 1 && expected == MODEL_VERSION),
            "{err}"
        );
    }

    #[test]
    fn training_without_data_fails_and_one_class_is_constant() {
        assert!(matches!(
            Model::train(&[], &TrainOptions::default()),
            Err(ModelError::NoData)
        ));
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let mut rows = synthetic::generate(5, 40, 1, now);
        for r in &mut rows {
            r.attended = true;
            r.offered.clear();
        }
        let model = Model::train(&rows, &TrainOptions::default()).unwrap();
        assert_eq!(model.preference.source(), PreferenceSource::Frequencies);
        let h = History::snapshots(&rows, Tz::UTC);
        let p = model.show_probabilities(&rows, &h, Tz::UTC);
        assert!(p.iter().all(|&p| p > 0.9));
    }
}

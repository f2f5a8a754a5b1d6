//! Scoring functions, written out so their exact definitions are on record.

/// Area under the ROC curve of `scores` against `labels` (`true` =
/// positive), computed from ranks (Mann–Whitney U): the probability that a
/// random positive scores above a random negative, ties counting one half.
///
/// `None` when either class is absent or the lengths differ.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = order[i..=j].iter().filter(|&&k| labels[k]).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Mean squared difference between predicted probabilities and outcomes
/// (`true` = 1). Lower is better; `NaN` for no data.
pub fn brier(probabilities: &[f64], labels: &[bool]) -> f64 {
    let n = probabilities.len().min(labels.len());
    if n == 0 {
        return f64::NAN;
    }
    probabilities
        .iter()
        .zip(labels)
        .map(|(p, &y)| (p - if y { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / n as f64
}

/// 1 when the one relevant item is ranked within the first `k` (`rank` is
/// 0-based), else 0.
pub fn hit_at(rank: usize, k: usize) -> f64 {
    if rank < k { 1.0 } else { 0.0 }
}

/// Normalised discounted cumulative gain at `k` with one relevant item at
/// 0-based position `rank`: `1 / log2(rank + 2)` inside the cut-off, else 0.
pub fn ndcg_at(rank: usize, k: usize) -> f64 {
    if rank < k {
        1.0 / ((rank + 2) as f64).log2()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_hand_computed() {
        // Pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 → 3/4.
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!(close(auc, 0.75));
        // Perfect and inverted.
        assert!(close(roc_auc(&[1.0, 2.0], &[false, true]).unwrap(), 1.0));
        assert!(close(roc_auc(&[2.0, 1.0], &[false, true]).unwrap(), 0.0));
    }

    #[test]
    fn auc_ties_count_half() {
        // Pairs: 0.5 vs 0.2 → 1; 0.5 vs 0.5 → ½; 0.9 vs 0.2 → 1; 0.9 vs 0.5 → 1.
        let auc = roc_auc(&[0.2, 0.5, 0.5, 0.9], &[false, true, false, true]).unwrap();
        assert!(close(auc, 3.5 / 4.0));
        // All tied: chance.
        let auc = roc_auc(&[0.3; 5], &[true, false, true, false, false]).unwrap();
        assert!(close(auc, 0.5));
    }

    #[test]
    fn auc_undefined_with_one_class() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(roc_auc(&[0.1], &[true, false]), None);
    }

    #[test]
    fn brier_hand_computed() {
        // (0.1² + 0.2² + 0.5²) / 3 = (0.01 + 0.04 + 0.25) / 3 = 0.1
        assert!(close(brier(&[0.9, 0.2, 0.5], &[true, false, true]), 0.1));
        assert!(close(brier(&[1.0, 0.0], &[true, false]), 0.0));
        assert!(brier(&[], &[]).is_nan());
    }

    #[test]
    fn ranking_metrics_hand_computed() {
        assert_eq!(hit_at(2, 3), 1.0);
        assert_eq!(hit_at(3, 3), 0.0);
        assert!(close(ndcg_at(0, 5), 1.0));
        assert!(close(ndcg_at(1, 5), 1.0 / 3f64.log2()));
        assert!(close(ndcg_at(2, 5), 0.5));
        assert_eq!(ndcg_at(5, 5), 0.0);
    }
}

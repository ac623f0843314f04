//! "Did you mean …?" suggestions for misspelled names.

/// The candidate closest to `word`, if it is a plausible typo of it: at most
/// two edits away (case-insensitive), and with fewer edits than half the
/// word's length so short words don't "match" unrelated names (`rtmp` is
/// two edits from `http`, but not a typo of it).
pub(crate) fn did_you_mean<'c, S: AsRef<str>>(word: &str, candidates: &'c [S]) -> Option<&'c str> {
    let word_lower = word.to_lowercase();
    let word_len = word_lower.chars().count();
    candidates
        .iter()
        .map(|candidate| {
            let candidate = candidate.as_ref();
            (
                edit_distance(&word_lower, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|&(distance, _)| distance <= 2 && 2 * distance < word_len)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// ` (did you mean `x`?)`, or nothing when no candidate is close.
pub(crate) fn suggestion_suffix<S: AsRef<str>>(word: &str, candidates: &[S]) -> String {
    match did_you_mean(word, candidates) {
        Some(candidate) => format!(" (did you mean `{candidate}`?)"),
        None => String::new(),
    }
}

/// Edit distance over characters where inserting, deleting or replacing a
/// character, or swapping two adjacent ones, each count as one edit
/// (optimal string alignment): swapped letters are the most common typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // distances[i][j]: edits to turn the first i chars of a into the first j of b.
    let mut distances = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in distances.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in distances[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let replace_cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (distances[i - 1][j] + 1)
                .min(distances[i][j - 1] + 1)
                .min(distances[i - 1][j - 1] + replace_cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(distances[i - 2][j - 2] + 1);
            }
            distances[i][j] = best;
        }
    }
    distances[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::{did_you_mean, edit_distance};

    #[test]
    fn distance_counts_single_character_edits() {
        assert_eq!(edit_distance("http", "http"), 0);
        assert_eq!(edit_distance("htp", "http"), 1);
        assert_eq!(edit_distance("enabeld", "enabled"), 1, "a swap is one edit");
        assert_eq!(edit_distance("rtmp", "http"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_only_close_candidates() {
        let keys = ["enabled", "listen"];
        assert_eq!(did_you_mean("enabeld", &keys), Some("enabled"));
        assert_eq!(did_you_mean("Listen", &keys), Some("listen"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(did_you_mean("x", &["y"]), None, "too short to guess");
        assert_eq!(did_you_mean("rtmp", &["example", "http"]), None);
        assert_eq!(did_you_mean("htp", &["example", "http"]), Some("http"));
    }
}

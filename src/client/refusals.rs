//! How POSTs refused by a server read, counted by status: one wording for
//! `connect` (its `/status` and exit line) and every `bench` report.

use std::collections::BTreeMap;

/// POSTs refused, all statuses.
pub fn refused(refusals: &BTreeMap<u16, u64>) -> u64 {
    refusals.values().fold(0u64, |a, n| a.saturating_add(*n))
}

/// `503 ×2, 429 ×1`: the statuses, most frequent first.
pub fn refusals_by_status(refusals: &BTreeMap<u16, u64>) -> String {
    let mut v: Vec<(&u16, &u64)> = refusals.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(s, n)| format!("{s} \u{d7}{n}")).collect::<Vec<_>>().join(", ")
}

/// `3 of 41 POSTs answered with an error status: 503 ×2, 429 ×1` (no
/// statuses when there was no refusal).
pub fn refusals_sentence(refusals: &BTreeMap<u16, u64>, posts: u64) -> String {
    let statuses = match refused(refusals) {
        0 => String::new(),
        _ => format!(": {}", refusals_by_status(refusals)),
    };
    format!("{} of {posts} POSTs answered with an error status{statuses}", refused(refusals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences() {
        let r: BTreeMap<u16, u64> = [(429, 1), (503, 2), (400, 1)].into();
        assert_eq!(refused(&r), 4);
        assert_eq!(refusals_by_status(&r), "503 \u{d7}2, 400 \u{d7}1, 429 \u{d7}1");
        assert_eq!(
            refusals_sentence(&r, 41),
            "4 of 41 POSTs answered with an error status: 503 \u{d7}2, 400 \u{d7}1, 429 \u{d7}1"
        );
        assert_eq!(
            refusals_sentence(&BTreeMap::new(), 7),
            "0 of 7 POSTs answered with an error status"
        );
    }
}

//! `--html FILE`: the report as one self-contained page (no network: its
//! styles and script are inline, and its CSP allows nothing else) that
//! draws its charts from the JSON report it embeds. The dashboard serves
//! the same page, fed live.
//!
//! The charts are SVG drawn by a few hundred lines of the page's own script
//! rather than a vendored chart library: the page stays small (under 40 KB
//! before the data), nothing needs a licence notice, and the SVG carries
//! its own text (labels, `role="img"`, a summary per chart) for screen
//! readers and print.

/// The page; `REPORT_JSON` and `LIVE_URL` are filled in.
const TEMPLATE: &str = include_str!("report.html");

/// The page for `report` (its JSON); with `live`, the URL of the event
/// stream that updates it.
pub fn page(report_json: &str, live: Option<&str>) -> String {
    // `<` only occurs inside JSON strings, where `\u003c` means the same:
    // the data can never close its <script> element.
    let data = report_json.replace('<', "\\u003c");
    let live = live.unwrap_or("").replace(['"', '<', '>', '&'], "");
    TEMPLATE.replacen("REPORT_JSON", &data, 1).replacen("LIVE_URL", &live, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Report;
    use crate::bench::timeline::{Sample, Timeline};

    #[test]
    fn the_data_cannot_close_its_script() {
        let r = Report {
            url: "http://h/</script><script>alert(1)</script>".into(),
            ..Report::default()
        };
        let html = page(&r.to_json(), None);
        assert!(!html.contains("</script><script>alert"), "{html}");
        assert_eq!(html.matches("</script>").count(), TEMPLATE.matches("</script>").count());
        let start = html.find("id=\"report\">").unwrap() + "id=\"report\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let back: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(back["url"], r.url);
    }

    #[test]
    fn a_ten_minute_run_is_under_2_mb() {
        // 600 seconds with everything a sample can hold.
        let mut tl = Timeline::new();
        for i in 1..=600u64 {
            let p = crate::bench::stats::Percentiles {
                p50: 1.234567,
                p90: 12.345678,
                p99: 123.456789,
                p999: 1234.567891,
                max: 12345.678912,
            };
            tl.push(Sample {
                t: i as f64,
                secs: 1.0,
                sent: 123_456,
                received: 123_456,
                rate: 123_456.789,
                latency_ms: Some(p),
                drops: 1234,
                resumes: 1234,
                recovery_ms: Some(p),
                refusals: [(429, 12), (502, 3), (503, 1234), (504, 1)].into(),
                unanswered: 12,
            });
        }
        tl.finish();
        let mut r = Report { timeline: tl, ..Report::default() };
        let mut h = crate::bench::stats::Histograms::default();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100_000 {
            h.latency.record_us(rng.u64(1..10_000_000));
            h.recovery.record_us(rng.u64(1..10_000_000));
        }
        r.set_histograms(h);
        let html = page(&r.to_json(), None);
        assert!(html.len() < 2 << 20, "{} bytes", html.len());
    }
}

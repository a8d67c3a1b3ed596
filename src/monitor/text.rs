//! How `constella stats NODE --history RANGE` prints: a table with a sparkline per series, or
//! the JSON `{"metric": [[unix_secs, value], …], …}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use constella_behaviours::rpc::History;

use crate::output::human_bytes;

/// Characters of a sparkline, lowest to highest.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Columns of a sparkline.
const WIDTH: usize = 40;

/// The JSON of `--history --json`.
pub fn history_json(history: &History) -> BTreeMap<String, Vec<(u64, f64)>> {
    history
        .series
        .iter()
        .map(|s| (s.metric.clone(), s.points.clone()))
        .collect()
}

/// A value with the unit its metric name says.
pub fn format_value(metric: &str, value: f64) -> String {
    let base = metric.split(':').next().unwrap_or(metric);
    if base.ends_with("_bytes_per_sec") {
        format!("{}/s", human_bytes(value.max(0.0) as u64))
    } else if base.ends_with("_bytes") {
        human_bytes(value.max(0.0) as u64)
    } else if base.ends_with("_percent") {
        format!("{value:.1} %")
    } else {
        format!("{value:.2}")
    }
}

/// `values` as a line of [`WIDTH`] bars (each the average of its share), scaled min..max.
pub fn sparkline(values: &[f64]) -> String {
    if values.is_empty() {
        return String::new();
    }
    let columns = values.len().min(WIDTH);
    let averages: Vec<f64> = (0..columns)
        .map(|c| {
            let start = c * values.len() / columns;
            let end = ((c + 1) * values.len() / columns).max(start + 1);
            values[start..end].iter().sum::<f64>() / (end - start) as f64
        })
        .collect();
    let min = averages.iter().copied().fold(f64::INFINITY, f64::min);
    let max = averages.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    averages
        .iter()
        .map(|v| {
            if (max - min).abs() < f64::EPSILON {
                BARS[0]
            } else {
                let index = ((v - min) / (max - min) * (BARS.len() - 1) as f64).round() as usize;
                BARS[index.min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// The table of `--history` without `--json`.
pub fn history_table(history: &History, range: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} over the last {range} ({} s samples)",
        history.name, history.step_secs
    );
    let width = history
        .series
        .iter()
        .map(|s| s.metric.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:width$}  {:>12}  {:>12}  {:>12}  {:>12}  history",
        "metric", "min", "avg", "max", "last"
    );
    for series in &history.series {
        let values: Vec<f64> = series.points.iter().map(|&(_, v)| v).collect();
        if values.is_empty() {
            let _ = writeln!(out, "{:width$}  (no samples in this range)", series.metric);
            continue;
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        let last = values[values.len() - 1];
        let f = |v| format_value(&series.metric, v);
        let _ = writeln!(
            out,
            "{:width$}  {:>12}  {:>12}  {:>12}  {:>12}  {}",
            series.metric,
            f(min),
            f(avg),
            f(max),
            f(last),
            sparkline(&values)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::rpc::Series;

    #[test]
    fn sparklines_scale_between_min_and_max() {
        assert_eq!(sparkline(&[0.0, 7.0]), "▁█");
        assert_eq!(sparkline(&[3.0, 3.0]), "▁▁");
        assert_eq!(
            sparkline(&(0..400).map(f64::from).collect::<Vec<_>>())
                .chars()
                .count(),
            40
        );
    }

    #[test]
    fn table_and_json() {
        let history = History {
            name: "alpha".into(),
            step_secs: 10,
            series: vec![
                Series {
                    metric: "cpu_percent".into(),
                    points: vec![(10, 1.0), (20, 3.0)],
                },
                Series {
                    metric: "net_rx_bytes_per_sec".into(),
                    points: vec![],
                },
            ],
        };
        let table = history_table(&history, "1h");
        assert!(table.contains("2.0 %"), "{table}");
        assert!(table.contains("no samples"), "{table}");
        let json = serde_json::to_string(&history_json(&history)).unwrap();
        assert_eq!(
            json,
            r#"{"cpu_percent":[[10,1.0],[20,3.0]],"net_rx_bytes_per_sec":[]}"#
        );
        assert_eq!(format_value("disk_used_bytes:/", 2048.0), "2.0 KiB");
    }
}

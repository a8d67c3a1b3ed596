//! History charts as inline SVG, drawn on the server from `GetHistory` answers: no script, no
//! image files, a few kilobytes per chart, and they scale with the page (a phone gets the same
//! chart, narrower).

use std::fmt::Write as _;

use constella_behaviours::rpc::History;

/// Drawing area in SVG units (the element itself is 100 % wide).
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 58.0;
const BOTTOM: f64 = 18.0;
const TOP: f64 = 8.0;

/// One line of a chart: its label, colour and points.
#[derive(Debug)]
pub struct Line<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(u64, f64)>,
}

/// The points of `metric` in `history` (empty if it has none).
pub fn series(history: &History, metric: &str) -> Vec<(u64, f64)> {
    history
        .series
        .iter()
        .find(|s| s.metric == metric)
        .map(|s| s.points.clone())
        .unwrap_or_default()
}

/// `used / total * 100` at each time both have a point.
pub fn percent_of(used: &[(u64, f64)], total: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let totals: std::collections::HashMap<u64, f64> = total.iter().copied().collect();
    used.iter()
        .filter_map(|&(t, u)| {
            let total = *totals.get(&t)?;
            (total > 0.0).then(|| (t, u / total * 100.0))
        })
        .collect()
}

/// A chart of `lines` between `from` and `to` (unix seconds); `max` fixes the top of the
/// scale (100 for percentages), otherwise the largest value sets it. `format` writes a value
/// on the axis. Returns the `<svg>` element.
pub fn chart(
    title: &str,
    lines: &[Line<'_>],
    (from, to): (u64, u64),
    max: Option<f64>,
    format: impl Fn(f64) -> String,
) -> String {
    let top = max.unwrap_or_else(|| {
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max)
            .max(1.0)
    });
    let span = (to.saturating_sub(from)).max(1) as f64;
    let plot_w = WIDTH - LEFT - 4.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let x = |t: u64| LEFT + (t.saturating_sub(from) as f64 / span).min(1.0) * plot_w;
    let y = |v: f64| TOP + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;
    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" preserveAspectRatio="none">"##,
        maud::html! { (title) }.into_string()
    );
    for (fraction, label) in [
        (1.0, format(top)),
        (0.5, format(top / 2.0)),
        (0.0, format(0.0)),
    ] {
        let gy = TOP + plot_h - fraction * plot_h;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">{}</text>"##,
            WIDTH - 4.0,
            LEFT - 4.0,
            gy + 4.0,
            maud::html! { (label) }.into_string()
        );
    }
    for line in lines {
        if line.points.is_empty() {
            continue;
        }
        let mut path = String::with_capacity(line.points.len() * 14);
        for (i, &(t, v)) in line.points.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(t),
                y(v)
            );
        }
        let _ = write!(
            svg,
            r##"<path d="{path}" fill="none" stroke="{}" stroke-width="1.5" vector-effect="non-scaling-stroke"><title>{}</title></path>"##,
            line.colour,
            maud::html! { (line.label) }.into_string()
        );
    }
    if lines.iter().all(|l| l.points.is_empty()) {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">—</text>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_each_point_inside_the_box() {
        let points: Vec<(u64, f64)> = (0..10).map(|i| (1000 + i * 10, i as f64 * 10.0)).collect();
        let svg = chart(
            "CPU <%>",
            &[Line {
                label: "cpu",
                colour: "#36c",
                points,
            }],
            (1000, 1090),
            Some(100.0),
            |v| format!("{v:.0} %"),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("CPU &lt;%&gt;"), "the title is escaped");
        assert_eq!(svg.matches(" L").count(), 9);
        assert!(svg.contains(&format!("M{LEFT:.1},{:.1}", HEIGHT - BOTTOM)));
        let empty = chart("x", &[], (0, 1), None, |v| v.to_string());
        assert!(empty.contains("—"));
    }

    #[test]
    fn percentages_pair_points_by_time() {
        let used = [(1, 50.0), (2, 20.0), (3, 1.0)];
        let total = [(1, 100.0), (2, 40.0)];
        assert_eq!(percent_of(&used, &total), vec![(1, 50.0), (2, 50.0)]);
    }
}

//! Charts of a node's history as PNG, for the bot's `📈` button: CPU, RAM, disk and traffic in
//! four stacked panels, drawn with `plotters` into an RGB buffer and encoded with `png`. The
//! font (DejaVu Sans, which has Cyrillic) is compiled in: no system fonts are needed.

use std::sync::Once;

use constella_behaviours::rpc::History;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Width and height of a chart, pixels.
pub const WIDTH: u32 = 1000;
/// See [`WIDTH`].
pub const HEIGHT: u32 = 1100;

/// DejaVu Sans (licence: assets/fonts/DejaVuSans-LICENSE.txt).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT_NAME: &str = "sans-serif";

/// The metrics a chart asks for.
pub const CHART_METRICS: &[&str] = &[
    "cpu_percent",
    "ram_used_bytes",
    "ram_total_bytes",
    "disk_used_percent:/",
    "net_rx_bytes_per_sec",
    "net_tx_bytes_per_sec",
];

/// Panel titles, in the bot's language.
#[derive(Debug, Clone, Copy)]
pub struct Titles {
    pub cpu: &'static str,
    pub ram: &'static str,
    pub disk: &'static str,
    pub traffic: &'static str,
    pub received: &'static str,
    pub sent: &'static str,
}

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded chart font does not load".to_owned());
    });
    result
}

fn points<'a>(history: &'a History, metric: &str) -> &'a [(u64, f64)] {
    history
        .series
        .iter()
        .find(|s| s.metric == metric)
        .map_or(&[], |s| s.points.as_slice())
}

/// A scale for bytes: the divisor and its unit.
fn byte_scale(max: f64) -> (f64, &'static str) {
    const UNITS: [(f64, &str); 4] = [
        (1024.0 * 1024.0 * 1024.0, "GiB"),
        (1024.0 * 1024.0, "MiB"),
        (1024.0, "KiB"),
        (1.0, "B"),
    ];
    UNITS
        .iter()
        .copied()
        .find(|(d, _)| max >= *d)
        .unwrap_or((1.0, "B"))
}

/// The time label of an x position: hours and minutes (UTC) for a day or less, else day.month.
fn time_label(secs: u64, range_secs: u64) -> String {
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    if range_secs <= 86_400 {
        format!("{h:02}:{m:02}")
    } else {
        // YYYY-MM-DD
        let day = crate::logging::utc_day(secs);
        format!("{}.{} {h:02}h", &day[8..10], &day[5..7])
    }
}

/// One line of a panel: its legend label (empty: none), its points and its colour.
type Line<'a> = (&'a str, &'a [(u64, f64)], RGBColor);

type Panel<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// One panel: lines of `(label, points, colour)` scaled by `divisor`, y from 0.
#[allow(clippy::too_many_arguments)]
fn panel(
    area: &Panel<'_>,
    title: &str,
    unit: &str,
    lines: &[Line<'_>],
    divisor: f64,
    y_max: Option<f64>,
    (from, to): (u64, u64),
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw the chart: {e}");
    let highest = lines
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|&(_, v)| v / divisor))
        .fold(0.0f64, f64::max);
    let top = y_max.unwrap_or((highest * 1.15).max(1.0));
    let range = to - from;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title} ({unit})"), (FONT_NAME, 22))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(28)
        .y_label_area_size(70)
        .build_cartesian_2d(from..to, 0.0..top)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(5)
        .x_label_formatter(&|x| time_label(*x, range))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FONT_NAME, 14))
        .draw()
        .map_err(|e| fail(&e))?;
    for &(label, points, colour) in lines {
        let series = chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(t, v)| (t, v / divisor)),
                colour.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        if !label.is_empty() {
            series.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        }
    }
    if lines.iter().any(|(label, _, _)| !label.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FONT_NAME, 14))
            .draw()
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// The PNG of `history` over `[now - range_secs, now]`, headed `heading`.
pub fn render(
    history: &History,
    heading: &str,
    titles: Titles,
    range_secs: u64,
    now: u64,
) -> Result<Vec<u8>, String> {
    register_font()?;
    let span = (now.saturating_sub(range_secs), now.max(1));
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| format!("cannot draw the chart: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let root = root
            .titled(heading, (FONT_NAME, 28))
            .map_err(|e| fail(&e))?;
        let panels = root.split_evenly((4, 1));
        let blue = RGBColor(31, 119, 180);
        let orange = RGBColor(255, 127, 14);
        panel(
            &panels[0],
            titles.cpu,
            "%",
            &[("", points(history, "cpu_percent"), blue)],
            1.0,
            Some(100.0),
            span,
        )?;
        let ram = points(history, "ram_used_bytes");
        let total = points(history, "ram_total_bytes");
        let (divisor, unit) = byte_scale(total.iter().chain(ram).map(|p| p.1).fold(0.0, f64::max));
        panel(
            &panels[1],
            titles.ram,
            unit,
            &[("", ram, blue), ("", total, RGBColor(150, 150, 150))],
            divisor,
            None,
            span,
        )?;
        panel(
            &panels[2],
            titles.disk,
            "%",
            &[("/", points(history, "disk_used_percent:/"), blue)],
            1.0,
            Some(100.0),
            span,
        )?;
        let rx = points(history, "net_rx_bytes_per_sec");
        let tx = points(history, "net_tx_bytes_per_sec");
        let (divisor, unit) = byte_scale(rx.iter().chain(tx).map(|p| p.1).fold(0.0, f64::max));
        panel(
            &panels[3],
            titles.traffic,
            &format!("{unit}/s"),
            &[(titles.received, rx, blue), (titles.sent, tx, orange)],
            divisor,
            None,
            span,
        )?;
        root.present().map_err(|e| fail(&e))?;
    }
    encode_png(&rgb)
}

/// Colours of the overview's nodes, in turn.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
/// Most nodes one overview draws (one line each per panel).
pub const MAX_OVERVIEW_NODES: usize = PALETTE.len();

/// One node of the overview: its history, its RAM in percent, its colour.
type OverviewNode<'a> = (&'a History, &'a Vec<(u64, f64)>, RGBColor);

/// RAM used as a percent of installed, at the times both were sampled.
fn ram_percent(history: &History) -> Vec<(u64, f64)> {
    let totals: std::collections::BTreeMap<u64, f64> =
        points(history, "ram_total_bytes").iter().copied().collect();
    points(history, "ram_used_bytes")
        .iter()
        .filter_map(|&(t, used)| {
            let total = *totals.get(&t)?;
            (total > 0.0).then_some((t, used * 100.0 / total))
        })
        .collect()
}

/// The overview PNG: CPU, RAM and disk `/` of every node in `histories` (at most
/// [`MAX_OVERVIEW_NODES`], one colour each) over `[now - range_secs, now]`, in percent.
pub fn render_overview(
    histories: &[History],
    heading: &str,
    titles: Titles,
    range_secs: u64,
    now: u64,
) -> Result<Vec<u8>, String> {
    register_font()?;
    let span = (now.saturating_sub(range_secs), now.max(1));
    let rams: Vec<Vec<(u64, f64)>> = histories.iter().map(ram_percent).collect();
    let nodes: Vec<OverviewNode<'_>> = histories
        .iter()
        .zip(&rams)
        .zip(PALETTE)
        .map(|((h, r), c)| (h, r, c))
        .collect();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| format!("cannot draw the chart: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let root = root
            .titled(heading, (FONT_NAME, 28))
            .map_err(|e| fail(&e))?;
        let panels = root.split_evenly((3, 1));
        let cpu: Vec<Line<'_>> = nodes
            .iter()
            .map(|(h, _, c)| (h.name.as_str(), points(h, "cpu_percent"), *c))
            .collect();
        panel(&panels[0], titles.cpu, "%", &cpu, 1.0, Some(100.0), span)?;
        let ram: Vec<Line<'_>> = nodes
            .iter()
            .map(|(h, r, c)| (h.name.as_str(), r.as_slice(), *c))
            .collect();
        panel(&panels[1], titles.ram, "%", &ram, 1.0, Some(100.0), span)?;
        let disk: Vec<Line<'_>> = nodes
            .iter()
            .map(|(h, _, c)| (h.name.as_str(), points(h, "disk_used_percent:/"), *c))
            .collect();
        panel(&panels[2], titles.disk, "%", &disk, 1.0, Some(100.0), span)?;
        root.present().map_err(|e| fail(&e))?;
    }
    encode_png(&rgb)
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| format!("cannot encode the chart: {e}");
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_behaviours::rpc::Series;

    pub const TITLES: Titles = Titles {
        cpu: "Процессор",
        ram: "Память",
        disk: "Диск",
        traffic: "Трафик",
        received: "приём",
        sent: "передача",
    };

    #[test]
    fn a_chart_decodes_with_its_size() {
        let now = 1_800_000_000;
        let series = |metric: &str, scale: f64| Series {
            metric: metric.into(),
            points: (0..360)
                .map(|i| (now - 3600 + i * 10, scale * (i as f64).sin().abs()))
                .collect(),
        };
        let history = History {
            name: "alpha".into(),
            step_secs: 10,
            series: CHART_METRICS.iter().map(|m| series(m, 1e6)).collect(),
        };
        let png_bytes = render(&history, "alpha — 1 ч", TITLES, 3600, now).unwrap();
        if let Ok(path) = std::env::var("CONSTELLA_CHART_OUT") {
            std::fs::write(path, &png_bytes).unwrap();
        }
        let decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (WIDTH, HEIGHT));
        // An empty history still draws (empty panels).
        let empty = History {
            name: "alpha".into(),
            step_secs: 60,
            series: vec![],
        };
        assert!(render(&empty, "alpha — 7 д", TITLES, 7 * 86_400, now).is_ok());
        assert_eq!(time_label(0, 7 * 86_400), "01.01 00h");
    }

    /// Chart render time: `cargo test --release --bin constella -- --ignored --nocapture figures_`
    #[test]
    #[ignore = "a figure, not a check"]
    fn figures_chart_render_time() {
        let now = 1_800_000_000;
        let history = History {
            name: "alpha".into(),
            step_secs: 10,
            series: CHART_METRICS
                .iter()
                .map(|m| Series {
                    metric: (*m).into(),
                    points: (0..720)
                        .map(|i| (now - 7200 + i * 10, (i % 97) as f64 * 1e6))
                        .collect(),
                })
                .collect(),
        };
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..20 {
            let began = std::time::Instant::now();
            size = render(&history, "alpha — 24 ч", TITLES, 7200, now)
                .unwrap()
                .len();
            times.push(began.elapsed());
        }
        times.sort();
        println!(
            "chart {WIDTH}x{HEIGHT}, 4 panels, 6 series x 720 points: median {:.1} ms, max {:.1} ms, PNG {size} B",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}

//! The soak's record: one row a second, written as CSV, and at the end an SVG plot of the
//! server's RSS and open connections over time. Both are written by hand; nothing here does
//! I/O or reads a clock (the caller writes the strings).

use std::fmt::Write as _;

/// The CSV header; `Row::csv` writes the fields in this order.
pub const CSV_HEADER: &str = "elapsed_s,server_rss_kib,server_connections,client_connections,\
server_cpu_pct,published,delivered,lost,duplicated,out_of_order,connects,closes,errors";

/// One second of the soak. The counters are counts *in that second*; `server_connections`
/// is the relay's own `connections_open` (`/healthz`), `client_connections` the generator's
/// count of its connections open at the end of the second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub elapsed_s: f64,
    pub rss_kib: Option<u64>,
    pub server_connections: Option<u64>,
    pub client_connections: u64,
    pub cpu_pct: Option<f64>,
    pub published: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub connects: u64,
    pub closes: u64,
    pub errors: u64,
}

impl Row {
    /// The row as one CSV line (with its newline); an unknown value is an empty field.
    pub fn csv(&self) -> String {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let cpu = self.cpu_pct.map_or(String::new(), |v| format!("{v:.1}"));
        format!(
            "{:.3},{},{},{},{cpu},{},{},{},{},{},{},{},{}\n",
            self.elapsed_s,
            opt(self.rss_kib),
            opt(self.server_connections),
            self.client_connections,
            self.published,
            self.delivered,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.connects,
            self.closes,
            self.errors
        )
    }

    /// Open connections as plotted: the server's count where it is known, else the client's.
    fn connections(&self) -> u64 {
        self.server_connections.unwrap_or(self.client_connections)
    }
}

/// The warm-up: the first minute, or the first 10% of a run shorter than ten minutes.
pub fn warmup_s(run_s: f64) -> f64 {
    (run_s * 0.1).min(60.0)
}

/// A new peak of concurrency after the warm-up counts when it passes the peak before it (at
/// the warm-up's end, or at the last rise that counted) by more than this fraction.
pub const PEAK_RISE: f64 = 0.02;

/// How long after a rise of the peak its step in RSS is taken to have arrived.
pub const STEP_S: f64 = 5.0;

/// The rises of the peak concurrency after the warm-up that count ([`PEAK_RISE`]): `peaks`
/// are `(elapsed_s, connections)`, each a new peak, in time order. Rises within [`STEP_S`]
/// of the one before are one rise, at the later peak's time.
pub fn peak_rises(warmup_s: f64, peaks: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut base = peaks
        .iter()
        .filter(|(t, _)| *t <= warmup_s)
        .map(|&(_, n)| n)
        .max()
        .unwrap_or(0);
    let mut rises: Vec<(f64, u64)> = Vec::new();
    for &(t, n) in peaks.iter().filter(|(t, _)| *t > warmup_s) {
        if n as f64 > base as f64 * (1.0 + PEAK_RISE) {
            base = n;
            match rises.last_mut() {
                Some(last) if t - last.0 < STEP_S => *last = (t, n),
                _ => rises.push((t, n)),
            }
        }
    }
    rises
}

/// What RSS did after the warm-up, with the steps at new peaks of concurrency taken out: the
/// server's tables keep the size of the most connections it held at once (its connection
/// table doubles when that passes a power of two), so a step when the peak rises (a stall of
/// the machine holds closing connections while new ones arrive) is a new high-water mark,
/// not growth. Everything else counts, before and after each step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RssVerdict {
    pub warm: Option<RssMark>,
    pub end: Option<RssMark>,
    /// Per counted rise: its time and the KiB RSS rose from just before it to [`STEP_S`]
    /// after it (0 if it did not).
    pub steps: Vec<(f64, u64)>,
    /// (end − the steps) ÷ warm.
    pub ratio: Option<f64>,
}

pub fn rss_verdict(rows: &[Row], warmup_s: f64, rises: &[(f64, u64)]) -> RssVerdict {
    let (warm, end) = rss_marks(rows, warmup_s);
    let rss = |r: &Row| r.rss_kib.map(|k| (r.elapsed_s, k));
    let steps: Vec<(f64, u64)> = rises
        .iter()
        .map(|&(t, _)| {
            let before = rows.iter().rev().filter(|r| r.elapsed_s < t).find_map(rss);
            let after = rows
                .iter()
                .filter(|r| r.elapsed_s >= t + STEP_S)
                .find_map(rss);
            let step = match (before, after) {
                (Some((_, b)), Some((_, a))) => a.saturating_sub(b),
                _ => 0,
            };
            (t, step)
        })
        .collect();
    let stepped: u64 = steps.iter().map(|&(_, k)| k).sum();
    let ratio = warm
        .zip(end)
        .map(|((_, w), (_, e))| e.saturating_sub(stepped) as f64 / w as f64);
    RssVerdict {
        warm,
        end,
        steps,
        ratio,
    }
}

/// An RSS reading: `(elapsed_s, kib)`.
pub type RssMark = (f64, u64);

/// The RSS reading of the first row at or after `warmup_s`, and of the last row.
pub fn rss_marks(rows: &[Row], warmup_s: f64) -> (Option<RssMark>, Option<RssMark>) {
    let mark = |r: &Row| r.rss_kib.map(|kib| (r.elapsed_s, kib));
    let warm = rows
        .iter()
        .filter(|r| r.elapsed_s >= warmup_s)
        .find_map(mark);
    let end = rows.iter().rev().find_map(mark);
    (warm, end)
}

// The plot's geometry, in SVG user units.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 80.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const HEADROOM: f64 = 1.15;
const RSS_COLOUR: &str = "#c0392b";
const CONN_COLOUR: &str = "#2e6fba";

/// The plot: RSS in MiB on the left axis, open connections on the right one, time along the
/// bottom (seconds, or minutes past ten), and a dashed line where the warm-up ends. Both value
/// axes start at 0, so a flat line looks flat and a slope is not magnified.
pub fn svg(rows: &[Row], warmup_s: f64, title: &str) -> String {
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let t_max = rows.last().map_or(1.0, |r| r.elapsed_s).max(1.0);
    let minutes = t_max > 600.0;
    let t_unit = if minutes { 60.0 } else { 1.0 };
    let rss_max = rows
        .iter()
        .filter_map(|r| r.rss_kib)
        .max()
        .map_or(1.0, |k| k as f64 / 1024.0);
    let conn_max = rows.iter().map(Row::connections).max().unwrap_or(1) as f64;
    // Headroom above the highest value, so a line never runs along the frame.
    let (rss_step, rss_top) = axis(rss_max * HEADROOM);
    let ticks = (rss_top / rss_step).round().max(1.0) as usize;
    // The right axis shares the left one's grid lines: as many steps, each a nice number.
    let conn_top = nice_at_least(conn_max * HEADROOM / ticks as f64) * ticks as f64;
    let (t_step, t_top) = axis(t_max / t_unit);
    let x = |t: f64| LEFT + t / t_unit / t_top * pw;
    let y = |v: f64, top: f64| TOP + ph - v / top * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and tick labels: RSS on the left, connections on the right (same 0..top fraction).
    for i in 0..=ticks {
        let f = i as f64 / ticks as f64;
        let yy = TOP + ph - f * ph;
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e5e5e5\"/>",
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{RSS_COLOUR}">{}</text>"#,
            LEFT - 6.0,
            yy + 4.0,
            label(i as f64 * rss_step)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="start" fill="{CONN_COLOUR}">{}</text>"#,
            LEFT + pw + 6.0,
            yy + 4.0,
            label(f * conn_top)
        );
    }
    let t_ticks = (t_top / t_step).round() as usize;
    for i in 0..=t_ticks {
        let t = i as f64 * t_step;
        let xx = LEFT + t / t_top * pw;
        let _ = writeln!(
            s,
            r#"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="black"/>"#,
            TOP + ph,
            TOP + ph + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            label(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    // Axis titles.
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">elapsed ({})</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 12.0,
        if minutes { "min" } else { "s" }
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle" fill="{RSS_COLOUR}">server RSS (MiB)</text>"#,
        TOP + ph / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle" fill="{CONN_COLOUR}">open connections</text>"#,
        WIDTH - 18.0,
        TOP + ph / 2.0
    );
    // The warm-up mark.
    if warmup_s <= t_max {
        let xx = x(warmup_s);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="5,4"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#555">after warm-up</text>"##,
            xx + 4.0,
            TOP + 14.0
        );
    }
    // The two series.
    let line = |s: &mut String, colour: &str, points: &mut dyn Iterator<Item = (f64, f64)>| {
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points=""#
        );
        for (i, (px, py)) in points.enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(s, "{sep}{px:.1},{py:.1}");
        }
        let _ = writeln!(s, r#""/>"#);
    };
    line(
        &mut s,
        CONN_COLOUR,
        &mut rows
            .iter()
            .map(|r| (x(r.elapsed_s), y(r.connections() as f64, conn_top))),
    );
    line(
        &mut s,
        RSS_COLOUR,
        &mut rows.iter().filter_map(|r| {
            r.rss_kib
                .map(|k| (x(r.elapsed_s), y(k as f64 / 1024.0, rss_top)))
        }),
    );
    // Legend.
    let conn_source = if rows.iter().any(|r| r.server_connections.is_some()) {
        "open connections (server /healthz)"
    } else {
        "open connections (generator)"
    };
    for (i, (colour, text)) in [(RSS_COLOUR, "server RSS"), (CONN_COLOUR, conn_source)]
        .iter()
        .enumerate()
    {
        let ly = TOP + ph - 30.0 + i as f64 * 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{text}</text>"#,
            LEFT + 12.0,
            LEFT + 32.0,
            LEFT + 38.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about five ticks from 0 to at least
/// `max`, and the axis top (a whole number of steps).
fn axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_at_least(max / 5.0);
    (step, (max / step).ceil().max(1.0) * step)
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `x` (> 0).
fn nice_at_least(x: f64) -> f64 {
    let x = if x.is_finite() && x > 0.0 { x } else { 1.0 };
    let pow = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|&s| s >= x * (1.0 - 1e-12))
        .unwrap_or(10.0 * pow)
}

/// A tick label: whole numbers without decimals, others with as few as they need.
fn label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_owned()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f64, rss_kib: u64, conns: u64) -> Row {
        Row {
            elapsed_s: t,
            rss_kib: Some(rss_kib),
            server_connections: Some(conns),
            client_connections: conns - 1,
            cpu_pct: Some(12.345),
            published: 1000,
            delivered: 30_000,
            ..Row::default()
        }
    }

    #[test]
    fn csv_rows_follow_the_header_and_leave_unknowns_empty() {
        let fields = CSV_HEADER.split(',').count();
        let line = row(1.0, 5120, 1001).csv();
        assert_eq!(line, "1.000,5120,1001,1000,12.3,1000,30000,0,0,0,0,0,0\n");
        assert_eq!(line.trim_end().split(',').count(), fields);
        let unknown = Row {
            elapsed_s: 2.5,
            ..Row::default()
        };
        assert_eq!(unknown.csv(), "2.500,,,0,,0,0,0,0,0,0,0,0\n");
    }

    #[test]
    fn warmup_is_a_minute_or_a_tenth_of_a_short_run() {
        assert_eq!(warmup_s(1800.0), 60.0);
        assert_eq!(warmup_s(60.0), 6.0);
    }

    #[test]
    fn only_rises_of_the_peak_after_the_warmup_and_past_two_percent_count() {
        // Small new peaks after the warm-up do not count, nor does any before it.
        let peaks = [(0.5, 900), (1.0, 1004), (70.0, 1015), (90.0, 1020)];
        assert_eq!(peak_rises(60.0, &peaks), []);
        // A rise of more than 2% does, and so does a creep of small ones adding up past it;
        // rises close together are one.
        let peaks = [
            (1.0, 1000),
            (70.0, 1010),
            (80.0, 1021),
            (150.0, 1030),
            (182.0, 1046),
            (184.0, 1100),
            (300.0, 1110),
        ];
        assert_eq!(peak_rises(60.0, &peaks), [(80.0, 1021), (184.0, 1100)]);
        assert_eq!(peak_rises(60.0, &[]), []);
    }

    #[test]
    fn rss_steps_at_rises_of_the_peak_are_taken_out_and_the_rest_counts() {
        // 1000 KiB from the warm-up, 1 KiB more every 10 s, and a step of 60 KiB at 150 s.
        let rows: Vec<Row> = (1..=300)
            .map(|i| {
                let t = f64::from(i);
                let kib = 1000 + i as u64 / 10 + if i >= 152 { 60 } else { 0 };
                row(t, kib, 1000)
            })
            .collect();
        let v = rss_verdict(&rows, 60.0, &[(150.0, 1046)]);
        assert_eq!(v.warm, Some((60.0, 1006)));
        assert_eq!(v.end, Some((300.0, 1090)));
        // From the row before it (149 s: 1014) to 5 s after it (155 s: 1075).
        assert_eq!(v.steps, [(150.0, 61)]);
        // The slow growth before and after the step still counts.
        assert_eq!(v.ratio, Some((1090.0 - 61.0) / 1006.0));
        // Without the rise, the step counts as growth too.
        assert_eq!(rss_verdict(&rows, 60.0, &[]).ratio, Some(1090.0 / 1006.0));
    }

    #[test]
    fn rss_marks_are_the_first_row_after_warmup_and_the_last() {
        let rows: Vec<Row> = (1..=10)
            .map(|i| row(f64::from(i), 1000 + i as u64, 5))
            .collect();
        let (warm, end) = rss_marks(&rows, 3.0);
        assert_eq!(warm, Some((3.0, 1003)));
        assert_eq!(end, Some((10.0, 1010)));
        assert_eq!(rss_marks(&[], 3.0), (None, None));
    }

    #[test]
    fn svg_has_both_series_axes_and_the_warmup_line() {
        let rows: Vec<Row> = (1..=100)
            .map(|i| row(f64::from(i), 20 * 1024 + i as u64, 1000))
            .collect();
        let svg = svg(&rows, 10.0, "soak <test> & co");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // 100 points per series.
        for poly in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let points = poly.split("points=\"").nth(1).unwrap();
            assert_eq!(points.trim_end_matches("\"/>").split(' ').count(), 100);
        }
        assert!(svg.contains("after warm-up"));
        assert!(svg.contains("server RSS (MiB)"));
        assert!(svg.contains("open connections (server /healthz)"));
        assert!(svg.contains("soak &lt;test&gt; &amp; co"));
        // The warm-up line sits at 10 s on an axis of 0..100 s.
        let pw = WIDTH - LEFT - RIGHT;
        let at = format!("x1=\"{:.1}\"", LEFT + 0.1 * pw);
        assert!(svg.contains(&at), "{at} in {svg}");
        // Every tag opened is closed: as many '<' as '>'.
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }

    #[test]
    fn axis_steps_are_nice_and_cover_the_maximum() {
        assert_eq!(axis(23.0), (5.0, 25.0));
        assert_eq!(axis(1000.0), (200.0, 1000.0));
        assert_eq!(axis(0.0), (0.2, 1.0));
        assert_eq!(nice_at_least(1004.0 / 4.0), 500.0);
        assert_eq!(nice_at_least(240.0), 250.0);
        assert_eq!(label(2.5), "2.5");
        assert_eq!(label(40.0), "40");
    }
}

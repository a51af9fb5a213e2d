//! An SVG of one run, written by hand: throughput per second on top, latency
//! percentiles per second below (log scale, milliseconds).

use std::fmt::Write as _;

use crate::record::Percentiles;
use crate::report::Report;

const W: f64 = 900.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const PLOT_W: f64 = W - LEFT - RIGHT;
const TOP_Y: f64 = 50.0;
const TOP_H: f64 = 180.0;
const BOT_Y: f64 = 290.0;
const BOT_H: f64 = 260.0;
const H: f64 = BOT_Y + BOT_H + 50.0;

/// A latency line: its name, its colour and the percentile it draws.
type Series = (&'static str, &'static str, fn(&Percentiles) -> f64);

pub fn svg(r: &Report) -> String {
    let rows = &r.per_second;
    let n = rows.len().max(1) as f64;
    let x = |i: usize| LEFT + PLOT_W * (i as f64 + 0.5) / n;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{} — {} ({:.0} req/s, p99 {:.2} ms)</text>"#,
        esc(&r.scenario.name),
        esc(&r.label),
        r.requests_per_sec,
        r.latency_ms.p99
    );

    // Throughput.
    let max_rps = rows.iter().map(|r| r.replies).max().unwrap_or(0).max(1) as f64;
    let top = nice_ceiling(max_rps);
    let y_top = |v: f64| TOP_Y + TOP_H - TOP_H * v / top;
    frame(&mut s, TOP_Y, TOP_H, "replies per second");
    for k in 0..=4 {
        let v = top * k as f64 / 4.0;
        tick(&mut s, y_top(v), &format!("{v:.0}"));
    }
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| (x(i), y_top(row.replies as f64)))
        .collect();
    line(&mut s, &pts, "#1f77b4");
    let err: Vec<(f64, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| (x(i), y_top(row.errors as f64)))
        .collect();
    if rows.iter().any(|r| r.errors > 0) {
        line(&mut s, &err, "#d62728");
    }
    legend(
        &mut s,
        TOP_Y,
        &[("replies/s", "#1f77b4"), ("errors/s", "#d62728")],
    );

    // Latency, log scale from 0.01 ms to a power of ten above the max.
    let max_ms = rows
        .iter()
        .map(|r| r.latency_ms.max)
        .fold(0.01f64, f64::max);
    let lo = -2.0f64;
    let hi = max_ms.log10().ceil().max(lo + 1.0);
    let y_bot = |ms: f64| {
        let l = ms.max(0.01).log10();
        BOT_Y + BOT_H - BOT_H * (l - lo) / (hi - lo)
    };
    frame(&mut s, BOT_Y, BOT_H, "latency per second (ms, log)");
    let mut e = lo as i32;
    while e <= hi as i32 {
        let v = 10f64.powi(e);
        tick(&mut s, y_bot(v), &fmt_ms(v));
        e += 1;
    }
    let series: [Series; 5] = [
        ("p50", "#2ca02c", |p| p.p50),
        ("p90", "#1f77b4", |p| p.p90),
        ("p99", "#ff7f0e", |p| p.p99),
        ("p99.9", "#d62728", |p| p.p999),
        ("max", "#7f7f7f", |p| p.max),
    ];
    for (_, color, f) in &series {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.replies + row.errors > 0)
            .map(|(i, row)| (x(i), y_bot(f(&row.latency_ms))))
            .collect();
        line(&mut s, &pts, color);
    }
    let names: Vec<(&str, &str)> = series.iter().map(|(n, c, _)| (*n, *c)).collect();
    legend(&mut s, BOT_Y, &names);

    // Seconds along the bottom.
    let step = (rows.len() / 10).max(1);
    for i in (0..rows.len()).step_by(step) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{i}</text>"#,
            x(i),
            BOT_Y + BOT_H + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since start</text>"#,
        LEFT + PLOT_W / 2.0,
        BOT_Y + BOT_H + 36.0
    );
    s.push_str("</svg>\n");
    s
}

fn frame(s: &mut String, y: f64, h: f64, title: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{y}" width="{PLOT_W}" height="{h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}">{}</text>"#,
        y - 8.0,
        esc(title)
    );
}

fn tick(s: &mut String, y: f64, label: &str) {
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
        LEFT + PLOT_W,
        LEFT - 6.0,
        y + 4.0
    );
}

fn line(s: &mut String, pts: &[(f64, f64)], color: &str) {
    if pts.is_empty() {
        return;
    }
    let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
        p.join(" ")
    );
}

fn legend(s: &mut String, y: f64, items: &[(&str, &str)]) {
    for (i, (name, color)) in items.iter().enumerate() {
        let yy = y + 14.0 + 18.0 * i as f64;
        let x = LEFT + PLOT_W + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{}" y1="{yy}" y2="{yy}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{name}</text>"#,
            x + 20.0,
            x + 26.0,
            yy + 4.0
        );
    }
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v}")
    } else {
        format!("{v:.0}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(23_000.0), 25_000.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }
}

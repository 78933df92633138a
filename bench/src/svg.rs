//! Hand-written SVG charts: grouped horizontal bars (median) with a whisker for the spread
//! (min to max over the runs) and an optional dashed target line.

use std::fmt::Write as _;

use crate::report::{Stats, num};

/// Colours of the series, in order (Tether, direct, rathole).
const COLOURS: [&str; 4] = ["#1f6feb", "#8b949e", "#d97706", "#2da44e"];
const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 170.0;
const VALUE_W: f64 = 90.0;
const BAR_H: f64 = 16.0;
const GROUP_GAP: f64 = 14.0;
const TOP: f64 = 58.0;

/// One chart: groups of bars, one bar per series.
pub struct BarChart {
    pub title: String,
    pub unit: String,
    pub series: Vec<String>,
    /// (group label, one value per series)
    pub groups: Vec<(String, Vec<Option<Stats>>)>,
    /// (value, label) of a dashed vertical target line
    pub target: Option<(f64, String)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl BarChart {
    pub fn render(&self) -> String {
        let plot_w = WIDTH - LABEL_W - VALUE_W;
        let n_series = self.series.len().max(1) as f64;
        let group_h = n_series * BAR_H + GROUP_GAP;
        let height = TOP + group_h * self.groups.len() as f64 + 28.0;
        let mut max = self
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().map(|s| s.max.max(s.median)))
            .fold(0.0f64, f64::max);
        if let Some((t, _)) = &self.target {
            max = max.max(*t);
        }
        if max <= 0.0 {
            max = 1.0;
        }
        let x = |v: f64| LABEL_W + (v / max * plot_w).max(0.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="20" font-size="15" font-weight="bold">{} ({})</text>"##,
            esc(&self.title),
            esc(&self.unit)
        );
        let mut lx = 10.0;
        for (i, name) in self.series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="32" width="12" height="12" fill="{c}"/><text x="{}" y="42">{}</text>"#,
                lx + 16.0,
                esc(name)
            );
            lx += 30.0 + 7.0 * name.len() as f64;
        }
        for (g, (label, values)) in self.groups.iter().enumerate() {
            let gy = TOP + g as f64 * group_h;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                LABEL_W - 8.0,
                gy + n_series * BAR_H / 2.0 + 4.0,
                esc(label)
            );
            for (i, v) in values.iter().enumerate() {
                let y = gy + i as f64 * BAR_H;
                let c = COLOURS[i % COLOURS.len()];
                let Some(st) = v else {
                    let _ = writeln!(
                        s,
                        r##"<text x="{}" y="{}" fill="#666">not measured</text>"##,
                        LABEL_W + 4.0,
                        y + BAR_H - 4.0
                    );
                    continue;
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{LABEL_W}" y="{}" width="{:.1}" height="{}" fill="{c}"/>"#,
                    y + 1.0,
                    x(st.median) - LABEL_W,
                    BAR_H - 2.0
                );
                if st.max > st.min {
                    let my = y + BAR_H / 2.0;
                    let _ = writeln!(
                        s,
                        r##"<path d="M{:.1} {my} H{:.1} M{:.1} {} V{} M{:.1} {} V{}" stroke="#222" fill="none"/>"##,
                        x(st.min),
                        x(st.max),
                        x(st.min),
                        my - 4.0,
                        my + 4.0,
                        x(st.max),
                        my - 4.0,
                        my + 4.0
                    );
                }
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    x(st.max.max(st.median)) + 5.0,
                    y + BAR_H - 4.0,
                    num(st.median)
                );
            }
        }
        if let Some((t, label)) = &self.target {
            let bottom = height - 22.0;
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom}" stroke="#cf222e" stroke-dasharray="5,4"/><text x="{0:.1}" y="{1}" fill="#cf222e" text-anchor="middle">{2}</text>"##,
                x(*t),
                bottom + 14.0,
                esc(label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

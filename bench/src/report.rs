//! Figures and how they are written: medians and spreads, the target verdict, results.json and
//! the Markdown table (also spliced into an existing README between markers).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// Median, spread and every run of one measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Stats {
    pub fn of(runs: &[f64]) -> Option<Stats> {
        if runs.is_empty() {
            return None;
        }
        let mut v = runs.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
            runs: runs.to_vec(),
        })
    }

    pub fn one(v: f64) -> Stats {
        Stats {
            median: v,
            min: v,
            max: v,
            runs: vec![v],
        }
    }
}

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Short,
    /// No target, or nothing to judge.
    Info,
}

/// One row of the results.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: String,
    /// The scenario letter of the issue: a (bulk) .. g (sizes).
    pub scenario: char,
    pub name: String,
    pub unit: String,
    pub tether: Option<Stats>,
    pub direct: Option<Stats>,
    pub rathole: Option<Stats>,
    /// tether / direct, medians.
    pub ratio: Option<f64>,
    pub target: Option<String>,
    pub verdict: Verdict,
    pub note: Option<String>,
}

impl Figure {
    pub fn new(id: &str, scenario: char, name: &str, unit: &str) -> Figure {
        Figure {
            id: id.to_owned(),
            scenario,
            name: name.to_owned(),
            unit: unit.to_owned(),
            tether: None,
            direct: None,
            rathole: None,
            ratio: None,
            target: None,
            verdict: Verdict::Info,
            note: None,
        }
    }

    pub fn tether(mut self, s: Option<Stats>) -> Self {
        self.tether = s;
        self
    }

    pub fn direct(mut self, s: Option<Stats>) -> Self {
        self.direct = s;
        if let (Some(t), Some(d)) = (&self.tether, &self.direct)
            && d.median > 0.0
        {
            self.ratio = Some(t.median / d.median);
        }
        self
    }

    pub fn rathole(mut self, s: Option<Stats>) -> Self {
        self.rathole = s;
        self
    }

    /// Set the target text and the verdict (`None`: nothing to judge).
    pub fn target(mut self, text: &str, pass: Option<bool>) -> Self {
        self.target = Some(text.to_owned());
        self.verdict = match pass {
            Some(true) => Verdict::Pass,
            Some(false) => Verdict::Short,
            None => Verdict::Info,
        };
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Results {
    pub mode: String,
    pub runs: usize,
    pub machine: serde_json::Value,
    pub seconds: f64,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

/// A number with a precision that suits its size.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{v:.0}");
        // thousands separators for readability
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(s: &Option<Stats>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.runs.len() < 2 || s.min == s.max => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
    }
}

const TABLE_HEAD: &str = "| | figure | unit | Tether | direct | Tether/direct | rathole | target | |\n\
                          |---|---|---|---|---|---|---|---|---|\n";

/// The Markdown table of every figure, then the notes.
pub fn markdown_table(r: &Results) -> String {
    let mut s = String::from(TABLE_HEAD);
    for f in &r.figures {
        let verdict = match f.verdict {
            Verdict::Pass => "pass",
            Verdict::Short => "**short**",
            Verdict::Info => "",
        };
        let name = match &f.note {
            Some(n) => format!("{}<br><sub>{}</sub>", f.name, n),
            None => f.name.clone(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.scenario,
            name,
            f.unit,
            cell(&f.tether),
            cell(&f.direct),
            f.ratio
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "–".into()),
            cell(&f.rathole),
            f.target.clone().unwrap_or_default(),
            verdict
        );
    }
    if !r.notes.is_empty() {
        s.push('\n');
        for n in &r.notes {
            let _ = writeln!(s, "* {n}");
        }
    }
    s
}

/// Start and end markers of the generated part of `README.md`.
pub const BEGIN: &str = "<!-- tether-bench results: begin (generated by scripts/bench --full) -->";
pub const END: &str = "<!-- tether-bench results: end -->";

/// The generated section: run summary, charts, table.
pub fn generated_section(r: &Results, charts: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Mode `{}`, {} run(s) per figure, {:.0} s in all. Machine: {}.\n",
        r.mode,
        r.runs,
        r.seconds,
        r.machine["summary"].as_str().unwrap_or("unknown")
    );
    for (file, title) in charts {
        let _ = writeln!(s, "![{title}]({file})\n");
    }
    s.push_str(&markdown_table(r));
    s
}

/// Write results.json and results.md, and refresh README.md's generated section if the
/// README exists with markers (else create a minimal README).
pub fn write_all(dir: &Path, r: &Results, charts: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(r)? + "\n",
    )?;
    let section = generated_section(r, charts);
    std::fs::write(
        dir.join("results.md"),
        format!("# Tether benchmark results\n\n{section}"),
    )?;
    let readme = dir.join("README.md");
    let block = format!("{BEGIN}\n{section}{END}");
    let text = match std::fs::read_to_string(&readme) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
            _ => format!("{old}\n{block}\n"),
        },
        Err(_) => format!("# Tether benchmarks\n\n{block}\n"),
    };
    std::fs::write(readme, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.5), "0.50");
    }
}

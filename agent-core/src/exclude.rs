//! Exclude patterns for discovered services (REFERENCE 3.3.4): Go `filepath.Match` globs.
//!
//! Whole-name match, case-sensitive: `*` is any run of non-`/` characters, `?` one non-`/`
//! character, `[...]`/`[^...]` a class with ranges, `\` escapes the next character. The matcher
//! follows Go's algorithm, which never backtracks into earlier stars: the work is bounded by
//! pattern length times name length.

use alloc::string::String;
use alloc::vec::Vec;

/// Longest single pattern.
pub const MAX_PATTERN: usize = 256;
/// Most patterns in one exclude specification.
pub const MAX_PATTERNS: usize = 256;

/// What was wrong with an exclude specification.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExcludeError {
    /// A pattern Go's `filepath.Match` would call malformed (unclosed `[`, empty class, bad
    /// range, trailing `\`).
    #[error("exclude pattern {0:?} is malformed")]
    BadPattern(String),
    /// A pattern longer than [`MAX_PATTERN`].
    #[error("exclude pattern of {len} bytes exceeds the limit of {max} bytes")]
    PatternTooLong { len: usize, max: usize },
    /// More than [`MAX_PATTERNS`] patterns.
    #[error("{count} exclude patterns given, at most {max} are allowed")]
    TooManyPatterns { count: usize, max: usize },
}

/// A set of exclude globs.
#[derive(Debug, Clone, Default)]
pub struct ExcludeSet {
    patterns: Vec<String>,
}

impl ExcludeSet {
    /// Comma-separated globs, trimmed, empty ones skipped; a malformed pattern is an error.
    pub fn parse(spec: &str) -> Result<ExcludeSet, ExcludeError> {
        let mut patterns = Vec::new();
        for pattern in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            check_pattern(pattern)?;
            if patterns.len() == MAX_PATTERNS {
                return Err(ExcludeError::TooManyPatterns {
                    count: spec.split(',').filter(|p| !p.trim().is_empty()).count(),
                    max: MAX_PATTERNS,
                });
            }
            patterns.push(String::from(pattern));
        }
        Ok(ExcludeSet { patterns })
    }

    /// Whether any pattern matches the whole name.
    pub fn is_excluded(&self, name: &str) -> bool {
        // Every pattern was checked by `parse`, so matching cannot fail.
        self.patterns
            .iter()
            .any(|p| glob_match(p, name).unwrap_or(false))
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(String::as_str)
    }
}

/// Length and syntax of one pattern.
fn check_pattern(pattern: &str) -> Result<(), ExcludeError> {
    if pattern.len() > MAX_PATTERN {
        return Err(ExcludeError::PatternTooLong {
            len: pattern.len(),
            max: MAX_PATTERN,
        });
    }
    let mut rest = pattern;
    while !rest.is_empty() {
        let (_, chunk, tail) = scan_chunk(rest);
        match_chunk(chunk, "").map_err(|()| bad(pattern))?;
        rest = tail;
    }
    Ok(())
}

fn bad(pattern: &str) -> ExcludeError {
    ExcludeError::BadPattern(String::from(pattern))
}

/// Go `filepath.Match(pattern, name)` on a Unix system.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, ExcludeError> {
    if pattern.len() > MAX_PATTERN {
        return Err(ExcludeError::PatternTooLong {
            len: pattern.len(),
            max: MAX_PATTERN,
        });
    }
    check_pattern(pattern)?;
    let mut pattern_rest = pattern;
    let mut name = name;
    'pattern: while !pattern_rest.is_empty() {
        let (star, chunk, tail) = scan_chunk(pattern_rest);
        pattern_rest = tail;
        if star && chunk.is_empty() {
            // A trailing star matches the rest of the name unless it holds a '/'.
            return Ok(!name.contains('/'));
        }
        let last = pattern_rest.is_empty();
        // Match at the current position first.
        if let Ok(Some(t)) = match_chunk(chunk, name)
            && (t.is_empty() || !last)
        {
            name = t;
            continue;
        }
        if star {
            // Then skip one more character at a time, never past a '/'.
            for (i, c) in name.char_indices() {
                if c == '/' {
                    break;
                }
                let after = name.get(i + c.len_utf8()..).unwrap_or("");
                if let Ok(Some(t)) = match_chunk(chunk, after) {
                    if last && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off leading stars and the chunk up to the next star outside a class.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let trimmed = pattern.trim_start_matches('*');
    let star = trimmed.len() != pattern.len();
    let bytes = trimmed.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    // `i` stops at an ASCII byte or after an escaped character's first byte; find a boundary.
    let mut end = i.min(trimmed.len());
    while !trimmed.is_char_boundary(end) {
        end += 1;
    }
    let (chunk, rest) = trimmed.split_at_checked(end).unwrap_or((trimmed, ""));
    (star, chunk, rest)
}

/// Matches a star-free chunk at the start of `s`: Ok(Some(rest of s)), Ok(None) for no match,
/// Err(()) for a malformed chunk (checked even after the match failed, as Go does).
fn match_chunk<'s>(mut chunk: &str, mut s: &'s str) -> Result<Option<&'s str>, ()> {
    let mut failed = false;
    while let Some(first) = chunk.chars().next() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            '[' => {
                let mut r = '\0';
                if !failed {
                    let mut chars = s.chars();
                    r = chars.next().unwrap_or('\0');
                    s = chars.as_str();
                }
                chunk = skip_ascii(chunk);
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = skip_ascii(chunk);
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0
                        && let Some(rest) = chunk.strip_prefix(']')
                    {
                        chunk = rest;
                        break;
                    }
                    let (lo, rest) = get_escaped(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix('-') {
                        let (h, rest) = get_escaped(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    let mut chars = s.chars();
                    if chars.next() == Some('/') {
                        failed = true;
                    }
                    s = chars.as_str();
                }
                chunk = skip_ascii(chunk);
            }
            _ => {
                let literal_chunk = if first == '\\' {
                    let rest = skip_ascii(chunk);
                    if rest.is_empty() {
                        return Err(());
                    }
                    rest
                } else {
                    chunk
                };
                let mut chars = literal_chunk.chars();
                let want = chars.next().ok_or(())?;
                if !failed {
                    let mut have = s.chars();
                    if have.next() != Some(want) {
                        failed = true;
                    }
                    s = have.as_str();
                }
                chunk = chars.as_str();
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// `s` without its first character, which the caller saw to be ASCII.
fn skip_ascii(s: &str) -> &str {
    s.get(1..).unwrap_or("")
}

/// One possibly escaped character of a class, and the rest; Err for a malformed class.
fn get_escaped(chunk: &str) -> Result<(char, &str), ()> {
    let chunk = match chunk.chars().next() {
        None | Some('-') | Some(']') => return Err(()),
        Some('\\') => {
            let rest = skip_ascii(chunk);
            if rest.is_empty() {
                return Err(());
            }
            rest
        }
        Some(_) => chunk,
    };
    let mut chars = chunk.chars();
    let r = chars.next().ok_or(())?;
    let rest = chars.as_str();
    if rest.is_empty() {
        return Err(());
    }
    Ok((r, rest))
}

#[cfg(test)]
mod tests;

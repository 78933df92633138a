//! OpenWrt UCI configuration files (`/etc/config/*`), read the way libuci's strict loader reads
//! them, and uhttpd's listen addresses for LuCI.
//!
//! A file is statements, one per line or separated by `;`: `config <type> ['<name>']` opens a
//! section, `option <key> '<value>'` sets a value, `list <key> '<value>'` appends to a list
//! (`package`, and the one-letter forms `c`/`o`/`l`/`p`, are accepted too). A value is unquoted,
//! `'single'` (no escapes) or `"double"` quoted (`\` takes the next character literally), or a
//! mix glued together; quoted values may span lines; `\` at the end of a line continues it;
//! `#` outside quotes starts a comment. As in libuci, a named section given twice is one
//! section, `list` after `option` of the same key turns it into a list, `option` after `list`
//! replaces it, and `option key ''` sets nothing.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::iter::Peekable;
use core::str::Chars;

use super::nginx::{self, Listen, ListenHost};

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// What was wrong with a UCI file. Lines count from 1.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UciError {
    /// A file over [`MAX_CONFIG_BYTES`].
    #[error("configuration of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A quoted value that runs to the end of the file.
    #[error("line {line}: string opened with {quote} is never closed")]
    UnterminatedQuote { line: usize, quote: char },
    /// A statement that is not `config`, `option`, `list` or `package`.
    #[error("line {line}: unknown command {word:?}, expected config, option, list or package")]
    UnknownCommand { line: usize, word: String },
    /// A statement without its required argument.
    #[error("line {line}: {command} without {what}")]
    MissingArgument {
        line: usize,
        command: &'static str,
        what: &'static str,
    },
    /// A statement with more arguments than it takes.
    #[error("line {line}: too many arguments to {command}")]
    TooManyArguments { line: usize, command: &'static str },
    /// `option` or `list` before the first `config`.
    #[error("line {line}: {command} before the first section")]
    OutsideSection { line: usize, command: &'static str },
    /// A section type, section name or option name with characters libuci refuses.
    #[error("line {line}: invalid character in {what} {value:?}")]
    InvalidName {
        line: usize,
        what: &'static str,
        value: String,
    },
    /// A named section given again with another type.
    #[error("line {line}: section {name:?} was declared before with type {previous:?}")]
    TypeChanged {
        line: usize,
        name: String,
        previous: String,
    },
    /// A uhttpd `listen_http`/`listen_https` value uhttpd could not bind (`line` is the
    /// section's).
    #[error("line {line}: invalid {key} address {value:?}: {reason}")]
    BadListen {
        line: usize,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// One `config` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// The section type (`config <type>`).
    pub kind: String,
    /// The name, `None` for an anonymous section.
    pub name: Option<String>,
    /// `option` values by key.
    pub options: BTreeMap<String, String>,
    /// `list` values by key, in order.
    pub lists: BTreeMap<String, Vec<String>>,
    /// Line of the `config` statement (the first one, for a section given twice).
    pub line: usize,
}

impl Section {
    /// The `option` value of `key`.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// The `list` values of `key` (empty when there are none).
    pub fn list(&self, key: &str) -> &[String] {
        self.lists.get(key).map_or(&[], Vec::as_slice)
    }
}

/// Parses a UCI file into its sections, in file order.
pub fn parse(text: &str) -> Result<Vec<Section>, UciError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(UciError::TooLarge {
            len: text.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        line: 1,
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut current: Option<usize> = None;
    while let Some((words, line)) = lexer.statement()? {
        let mut words = words.into_iter();
        let Some(command) = words.next() else {
            continue;
        };
        match command.as_str() {
            "config" | "c" => {
                let kind = required(words.next(), line, "config", "a section type")?;
                if !valid_type(&kind) {
                    return Err(invalid(line, "section type", kind));
                }
                let name = words.next().filter(|n| !n.is_empty());
                no_more(words, line, "config")?;
                let Some(name) = name else {
                    current = Some(sections.len());
                    sections.push(Section {
                        kind,
                        line,
                        ..Section::default()
                    });
                    continue;
                };
                if !valid_name(&name) {
                    return Err(invalid(line, "section name", name));
                }
                if let Some(&index) = by_name.get(&name) {
                    if let Some(previous) = sections.get(index)
                        && previous.kind != kind
                    {
                        return Err(UciError::TypeChanged {
                            line,
                            name,
                            previous: previous.kind.clone(),
                        });
                    }
                    current = Some(index);
                } else {
                    by_name.insert(name.clone(), sections.len());
                    current = Some(sections.len());
                    sections.push(Section {
                        kind,
                        name: Some(name),
                        line,
                        ..Section::default()
                    });
                }
            }
            "option" | "o" | "list" | "l" => {
                let list = matches!(command.as_str(), "list" | "l");
                let command = if list { "list" } else { "option" };
                let section = current
                    .and_then(|i| sections.get_mut(i))
                    .ok_or(UciError::OutsideSection { line, command })?;
                let key = required(words.next(), line, command, "a name")?;
                if !valid_name(&key) {
                    return Err(invalid(line, "option name", key));
                }
                let value = words.next().unwrap_or_default();
                no_more(words, line, command)?;
                if list {
                    let mut values = match section.options.remove(&key) {
                        Some(previous) => alloc::vec![previous],
                        None => section.lists.remove(&key).unwrap_or_default(),
                    };
                    values.push(value);
                    section.lists.insert(key, values);
                } else if !value.is_empty() {
                    section.lists.remove(&key);
                    section.options.insert(key, value);
                }
            }
            "package" | "p" => {
                let name = required(words.next(), line, "package", "a name")?;
                let package_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
                if !name.chars().all(package_char) {
                    return Err(invalid(line, "package name", name));
                }
                no_more(words, line, "package")?;
            }
            _ => {
                return Err(UciError::UnknownCommand {
                    line,
                    word: command,
                });
            }
        }
    }
    Ok(sections)
}

fn required(
    word: Option<String>,
    line: usize,
    command: &'static str,
    what: &'static str,
) -> Result<String, UciError> {
    word.filter(|w| !w.is_empty())
        .ok_or(UciError::MissingArgument {
            line,
            command,
            what,
        })
}

fn no_more(
    mut words: impl Iterator<Item = String>,
    line: usize,
    command: &'static str,
) -> Result<(), UciError> {
    match words.next() {
        Some(_) => Err(UciError::TooManyArguments { line, command }),
        None => Ok(()),
    }
}

fn invalid(line: usize, what: &'static str, value: String) -> UciError {
    UciError::InvalidName { line, what, value }
}

/// libuci's section names and option names: letters, digits, `_`.
fn valid_name(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// libuci's section types: printable ASCII without spaces.
fn valid_type(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic())
}

struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    line: usize,
}

impl Lexer<'_> {
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    /// The words of the next statement and the line it starts on; `None` at the end.
    /// A statement ends at a newline outside quotes, at `;` or at the end of the file.
    fn statement(&mut self) -> Result<Option<(Vec<String>, usize)>, UciError> {
        if self.chars.peek().is_none() {
            return Ok(None);
        }
        let line = self.line;
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        while let Some(c) = self.bump() {
            match c {
                '\n' | ';' => break,
                c if c.is_ascii_whitespace() || c == '\x0b' => words.extend(word.take()),
                '#' => while self.chars.next_if(|&c| c != '\n').is_some() {},
                '\'' | '"' => {
                    let word = word.get_or_insert_default();
                    let start = self.line;
                    loop {
                        match self.bump() {
                            None => {
                                return Err(UciError::UnterminatedQuote {
                                    line: start,
                                    quote: c,
                                });
                            }
                            Some(q) if q == c => break,
                            Some('\\') if c == '"' => self.escaped(word),
                            Some(other) => word.push(other),
                        }
                    }
                }
                '\\' => self.escaped(word.get_or_insert_default()),
                other => word.get_or_insert_default().push(other),
            }
        }
        words.extend(word);
        Ok(Some((words, line)))
    }

    /// After a `\`: a line end (`\n` or `\r\n`) is a continuation, anything else is taken
    /// literally.
    fn escaped(&mut self, word: &mut String) {
        match self.chars.peek() {
            None => {}
            Some('\n') => {
                self.bump();
            }
            Some('\r') => {
                self.bump();
                if self.chars.next_if_eq(&'\n').is_some() {
                    self.line += 1;
                } else {
                    word.push('\r');
                }
            }
            Some(_) => word.extend(self.bump()),
        }
    }
}

/// uhttpd's option keys, https first.
const UHTTPD_KEYS: [(&str, bool); 2] = [("listen_https", true), ("listen_http", false)];

/// The `listen_https` and `listen_http` addresses of every `uhttpd` section (as lists, or as
/// options holding space-separated addresses, as uhttpd's init script reads them), in that
/// order, as [`Listen`]s: https ones carry the `ssl` parameter and `line` is the section's.
///
/// uhttpd's forms are `port`, `addr:port` (split at the last `:`), `[v6]:port`; a port alone
/// binds every address. uhttpd binds `[::]` IPv6-only, like nginx.
pub fn uhttpd_listens(sections: &[Section]) -> Result<Vec<Listen>, UciError> {
    let mut found = Vec::new();
    for section in sections.iter().filter(|s| s.kind == "uhttpd") {
        for (key, tls) in UHTTPD_KEYS {
            let option = section.option(key).into_iter();
            let values = option.chain(section.list(key).iter().map(String::as_str));
            for value in values.flat_map(str::split_whitespace) {
                let (host, port) =
                    parse_uhttpd_address(value).map_err(|reason| UciError::BadListen {
                        line: section.line,
                        key,
                        value: String::from(value),
                        reason,
                    })?;
                let params = if tls {
                    alloc::vec![String::from("ssl")]
                } else {
                    Vec::new()
                };
                found.push(Listen {
                    host,
                    port,
                    params,
                    line: section.line,
                });
            }
        }
    }
    Ok(found)
}

/// Where LuCI is reached among the uhttpd sections: `(host:port to dial, tls)`, chosen as
/// [`nginx::web_ui_target`] does (https first, IPv4 wildcards become `127.0.0.1`).
pub fn luci_target(sections: &[Section]) -> Result<Option<(String, bool)>, UciError> {
    Ok(nginx::web_ui_target(&uhttpd_listens(sections)?))
}

fn parse_uhttpd_address(value: &str) -> Result<(ListenHost, u16), &'static str> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Ok((ListenHost::Any, nginx::parse_port(value)?));
    };
    let port = nginx::parse_port(port)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => {
            let inner = inner.strip_suffix(']').ok_or("missing \"]\"")?;
            let ip = inner.parse().map_err(|_| "not an IPv6 address")?;
            ListenHost::Ip(core::net::IpAddr::V6(ip))
        }
        None => nginx::parse_host(host)?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const UHTTPD: &str = include_str!("../../tests/fixtures/openwrt/etc/config/uhttpd");
    const NGINX: &str = include_str!("../../tests/fixtures/nethsecurity/etc/config/nginx");

    fn s(v: &str) -> String {
        String::from(v)
    }

    #[test]
    fn reads_sections_options_and_lists() {
        let text = "# comment\n\nconfig uhttpd 'main'\n\toption home '/www'\n\tlist listen_http '0.0.0.0:80'\n\tlist listen_http \"[::]:80\"\n\nconfig cert\n\toption days 730 # trailing\n";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 2);
        let main = &sections[0];
        assert_eq!(
            (main.kind.as_str(), main.name.as_deref(), main.line),
            ("uhttpd", Some("main"), 3)
        );
        assert_eq!(main.option("home"), Some("/www"));
        assert_eq!(main.list("listen_http"), [s("0.0.0.0:80"), s("[::]:80")]);
        assert_eq!(
            (sections[1].name.as_deref(), sections[1].option("days")),
            (None, Some("730"))
        );
        assert!(sections[1].list("missing").is_empty());
    }

    #[test]
    fn reads_every_quoting_style() {
        let text = "config t n\n option a 'it''s'\n option b \"say \\\"hi\\\"\"\n option c x\\ y\n option d 'no # comment'\n option e 'multi\nline'\n option f long\\\nvalue\n";
        let sections = parse(text).unwrap();
        let o = &sections[0];
        assert_eq!(o.option("a"), Some("its"));
        assert_eq!(o.option("b"), Some("say \"hi\""));
        assert_eq!(o.option("c"), Some("x y"));
        assert_eq!(o.option("d"), Some("no # comment"));
        assert_eq!(o.option("e"), Some("multi\nline"));
        assert_eq!(o.option("f"), Some("longvalue"));
    }

    #[test]
    fn follows_libuci_merging_rules() {
        let text = "config t 'n'\n option a 1\n list a 2\n list b 1; option b 3\nc t n; o c 4; option d ''\n";
        let sections = parse(text).unwrap();
        assert_eq!(sections.len(), 1);
        let n = &sections[0];
        assert_eq!(n.list("a"), [s("1"), s("2")]);
        assert_eq!(n.option("a"), None);
        assert_eq!((n.option("b"), n.list("b").len()), (Some("3"), 0));
        assert_eq!(n.option("c"), Some("4"));
        assert_eq!(n.option("d"), None);
    }

    #[test]
    fn rejects_malformed_files_naming_the_line() {
        let cases: &[(&str, UciError)] = &[
            (
                "config a\n option x 'open\n",
                UciError::UnterminatedQuote {
                    line: 2,
                    quote: '\'',
                },
            ),
            (
                "\n\nfrobnicate x",
                UciError::UnknownCommand {
                    line: 3,
                    word: s("frobnicate"),
                },
            ),
            (
                "option x y",
                UciError::OutsideSection {
                    line: 1,
                    command: "option",
                },
            ),
            (
                "config",
                UciError::MissingArgument {
                    line: 1,
                    command: "config",
                    what: "a section type",
                },
            ),
            (
                "config a\nlist",
                UciError::MissingArgument {
                    line: 2,
                    command: "list",
                    what: "a name",
                },
            ),
            (
                "config a b c",
                UciError::TooManyArguments {
                    line: 1,
                    command: "config",
                },
            ),
            (
                "config a\noption x y z",
                UciError::TooManyArguments {
                    line: 2,
                    command: "option",
                },
            ),
            (
                "config a b-c",
                UciError::InvalidName {
                    line: 1,
                    what: "section name",
                    value: s("b-c"),
                },
            ),
            (
                "config a\noption x.y 1",
                UciError::InvalidName {
                    line: 2,
                    what: "option name",
                    value: s("x.y"),
                },
            ),
            (
                "config a n\nconfig b n",
                UciError::TypeChanged {
                    line: 2,
                    name: s("n"),
                    previous: s("a"),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Err(want), "{text:?}");
        }
        let err = parse("config a\n\n option 'x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: string opened with ' is never closed"
        );
    }

    #[test]
    fn reads_openwrt_uhttpd_config() {
        let sections = parse(UHTTPD).unwrap();
        let kinds: Vec<&str> = sections.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["uhttpd", "cert"]);
        assert_eq!(
            sections[0].list("lua_prefix"),
            [s("/cgi-bin/luci=/usr/lib/lua/luci/sgi/uhttpd.lua")]
        );
        assert_eq!(sections[1].option("commonname"), Some("OpenWrt"));
        let listens = uhttpd_listens(&sections).unwrap();
        let targets: Vec<(String, bool)> =
            listens.iter().map(|l| (l.dial_target(), l.ssl())).collect();
        assert_eq!(
            targets,
            [
                (s("127.0.0.1:443"), true),
                (s("[::1]:443"), true),
                (s("127.0.0.1:80"), false),
                (s("[::1]:80"), false)
            ]
        );
        assert_eq!(luci_target(&sections), Ok(Some((s("127.0.0.1:443"), true))));
    }

    #[test]
    fn picks_plain_http_without_https_and_reads_option_form() {
        let sections = parse("config uhttpd main\n option listen_http '8080 [::]:8081'\n").unwrap();
        assert_eq!(
            luci_target(&sections),
            Ok(Some((s("127.0.0.1:8080"), false)))
        );
        let sections = parse(
            "config uhttpd main\n list listen_https '[::]:443'\n list listen_http 192.168.1.1:80\n",
        )
        .unwrap();
        assert_eq!(luci_target(&sections), Ok(Some((s("[::1]:443"), true))));
        let sections = parse("config uhttpd main\n option home /www\n").unwrap();
        assert_eq!(luci_target(&sections), Ok(None));
    }

    #[test]
    fn rejects_bad_uhttpd_addresses() {
        for bad in ["0.0.0.0:0", "http", "[::1:80", "[zz]:80", ":80"] {
            let text = alloc::format!("config uhttpd main\n list listen_https '{bad}'\n");
            let err = luci_target(&parse(&text).unwrap()).unwrap_err();
            assert!(
                matches!(
                    err,
                    UciError::BadListen {
                        line: 1,
                        key: "listen_https",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn reads_nginx_uci_listen_values() {
        let sections = parse(NGINX).unwrap();
        let lan = sections
            .iter()
            .find(|s| s.name.as_deref() == Some("_lan"))
            .unwrap();
        let listens: Vec<Listen> = lan
            .list("listen")
            .iter()
            .filter_map(|v| nginx::parse_listen(v.split_whitespace(), lan.line).unwrap())
            .collect();
        assert_eq!(listens.len(), 2);
        assert_eq!(
            nginx::web_ui_target(&listens),
            Some((s("127.0.0.1:443"), true))
        );
        assert_eq!(lan.option("access_log"), Some("off; # logd openwrt"));
        assert_eq!(
            lan.list("include"),
            [s("restrict_locally"), s("conf.d/*.locations")]
        );
        assert_eq!(lan.line, 5);
    }

    #[test]
    fn rejects_oversized_input() {
        let text = "#".repeat(MAX_CONFIG_BYTES + 1);
        assert!(matches!(parse(&text), Err(UciError::TooLarge { .. })));
    }
}

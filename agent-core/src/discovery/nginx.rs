//! nginx configuration: every `listen` directive of a configuration file, and the one a web UI
//! is best reached through.
//!
//! The tokenizer follows nginx's own (`ngx_conf_read_token`): `#` starts a comment only where a
//! token could start, `'...'` and `"..."` are strings with `\"`, `\'`, `\\`, `\t`, `\r`, `\n`
//! escapes, a word ends at whitespace, `;` or `{` (but `${` stays inside a word), and a directive
//! may span lines. Blocks nest to any depth; `listen` is collected wherever it appears. nginx
//! refuses to load a file with a syntax error or an invalid `listen`, so such a file is an
//! error here too (naming the line), never a partial result: what is returned is what nginx
//! would listen on. `include` is not followed, and blocks whose body is another language
//! (`*_by_lua_block`) are not understood.

use alloc::string::String;
use alloc::vec::Vec;
use core::iter::Peekable;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::Chars;

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// nginx's port when `listen` names only an address.
pub const DEFAULT_PORT: u16 = 80;

/// What was wrong with a configuration file. Lines count from 1.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NginxError {
    /// A file over [`MAX_CONFIG_BYTES`].
    #[error("configuration of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A quoted string that runs to the end of the file.
    #[error("line {line}: string opened with {quote} is never closed")]
    UnterminatedQuote { line: usize, quote: char },
    /// A character glued to the end of a quoted string.
    #[error("line {line}: unexpected {found:?} after a quoted string")]
    AfterQuote { line: usize, found: char },
    /// `;`, `{` or `}` where nginx does not accept it (an empty directive, a `}` inside a
    /// directive or without an open block).
    #[error("line {line}: unexpected {found:?}")]
    Unexpected { line: usize, found: char },
    /// A directive that the file ends in the middle of.
    #[error("line {line}: directive not terminated by \";\" or \"{{\" before the end of the file")]
    UnterminatedDirective { line: usize },
    /// A block that the file ends inside.
    #[error("line {line}: block is never closed by \"}}\"")]
    UnclosedBlock { line: usize },
    /// `listen;`.
    #[error("line {line}: \"listen\" directive has no address")]
    ListenWithoutAddress { line: usize },
    /// `listen ... {`.
    #[error("line {line}: \"listen\" directive cannot open a block")]
    ListenBlock { line: usize },
    /// A `listen` address nginx would refuse.
    #[error("line {line}: invalid listen address {address:?}: {reason}")]
    BadListen {
        line: usize,
        address: String,
        reason: &'static str,
    },
}

/// The address part of a `listen` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// No address, or `*`: every IPv4 address.
    Any,
    /// A literal address (`0.0.0.0` and `[::]` are the wildcards).
    Ip(IpAddr),
    /// A host name, resolved by nginx at start (`localhost`).
    Name(String),
}

/// One `listen` directive on a TCP port (Unix sockets are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Where nginx binds.
    pub host: ListenHost,
    /// The port (`DEFAULT_PORT` when only an address is given).
    pub port: u16,
    /// The parameters after the address, as written (`ssl`, `http2`, `default_server`,
    /// `quic`, `ipv6only=on`, `backlog=511`, ...).
    pub params: Vec<String>,
    /// Line of the `listen` keyword.
    pub line: usize,
}

impl Listen {
    /// Whether the listener speaks TLS (`ssl`).
    pub fn ssl(&self) -> bool {
        self.has_param("ssl")
    }

    /// Whether `name` is among the parameters, alone or as `name=value`.
    pub fn has_param(&self, name: &str) -> bool {
        self.params
            .iter()
            .any(|p| p.split_once('=').map_or(p.as_str(), |(k, _)| k) == name)
    }

    /// Whether a plain TCP client can talk to it: `quic` listeners are UDP and
    /// `proxy_protocol` ones expect a PROXY header first.
    pub fn dialable(&self) -> bool {
        !self.has_param("quic") && !self.has_param("proxy_protocol")
    }

    /// The `host:port` the agent dials to reach this listener from the same machine: the
    /// IPv4 wildcards (no address, `*`, `0.0.0.0`) become `127.0.0.1`; `[::]` becomes
    /// `[::1]` (nginx binds it IPv6-only) unless `ipv6only=off` makes it dual-stack; any other
    /// address is dialled as written, IPv6 in brackets.
    pub fn dial_target(&self) -> String {
        let port = self.port;
        match &self.host {
            ListenHost::Any => alloc::format!("127.0.0.1:{port}"),
            ListenHost::Ip(IpAddr::V4(ip)) if ip.is_unspecified() => {
                alloc::format!("127.0.0.1:{port}")
            }
            ListenHost::Ip(IpAddr::V4(ip)) => alloc::format!("{ip}:{port}"),
            ListenHost::Ip(IpAddr::V6(ip)) if ip.is_unspecified() => {
                if self.params.iter().any(|p| p == "ipv6only=off") {
                    alloc::format!("127.0.0.1:{port}")
                } else {
                    alloc::format!("[::1]:{port}")
                }
            }
            ListenHost::Ip(IpAddr::V6(ip)) => alloc::format!("[{ip}]:{port}"),
            ListenHost::Name(name) => alloc::format!("{name}:{port}"),
        }
    }

    /// Whether [`Listen::dial_target`] is an IPv6 address (IPv4 is preferred: it is always
    /// configured on loopback, IPv6 may be disabled).
    fn dials_ipv6(&self) -> bool {
        self.dial_target().starts_with('[')
    }
}

/// Every `listen` directive of `text`, in file order, Unix sockets left out. A syntax error or
/// an invalid `listen` anywhere is an error for the whole file (nginx would not load it).
///
/// The deprecated `ssl on;` directive of a `server` block adds `ssl` to that block's listens.
pub fn listens(text: &str) -> Result<Vec<Listen>, NginxError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(NginxError::TooLarge {
            len: text.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        line: 1,
    };
    let mut found = Vec::new();
    let mut args: Vec<(String, usize)> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    while let Some((token, line)) = lexer.next_token()? {
        match token {
            Token::Word(word) => args.push((word, line)),
            Token::Semicolon => {
                let Some(((name, name_line), rest)) = args.split_first() else {
                    return Err(NginxError::Unexpected { line, found: ';' });
                };
                match name.as_str() {
                    "listen" => {
                        let words = rest.iter().map(|(w, _)| w.as_str());
                        if let Some(listen) = parse_listen(words, *name_line)? {
                            found.push(listen);
                        }
                    }
                    "ssl" if rest.first().is_some_and(|(v, _)| v == "on") => {
                        if let Some(block) = blocks.last_mut() {
                            block.ssl_on = true;
                        }
                    }
                    _ => {}
                }
                args.clear();
            }
            Token::Open => {
                let Some((name, name_line)) = args.first() else {
                    return Err(NginxError::Unexpected { line, found: '{' });
                };
                if name == "listen" {
                    return Err(NginxError::ListenBlock { line: *name_line });
                }
                blocks.push(Block {
                    line: *name_line,
                    server: name == "server",
                    first_listen: found.len(),
                    ssl_on: false,
                });
                args.clear();
            }
            Token::Close => {
                if !args.is_empty() {
                    return Err(NginxError::Unexpected { line, found: '}' });
                }
                let Some(block) = blocks.pop() else {
                    return Err(NginxError::Unexpected { line, found: '}' });
                };
                if block.server && block.ssl_on {
                    for listen in found.iter_mut().skip(block.first_listen) {
                        if !listen.ssl() {
                            listen.params.push(String::from("ssl"));
                        }
                    }
                }
            }
        }
    }
    if let Some((_, line)) = args.first() {
        return Err(NginxError::UnterminatedDirective { line: *line });
    }
    if let Some(block) = blocks.last() {
        return Err(NginxError::UnclosedBlock { line: block.line });
    }
    Ok(found)
}

/// The arguments of one `listen` directive (`words` after the keyword; `line` is used in
/// errors): `Ok(None)` for a Unix socket. Also reads the values of OpenWrt's UCI
/// `list listen '443 ssl default_server'`, split on whitespace.
pub fn parse_listen<'a>(
    mut words: impl Iterator<Item = &'a str>,
    line: usize,
) -> Result<Option<Listen>, NginxError> {
    let Some(address) = words.next() else {
        return Err(NginxError::ListenWithoutAddress { line });
    };
    let bad = |reason| NginxError::BadListen {
        line,
        address: String::from(address),
        reason,
    };
    let Some((host, port)) = parse_address(address).map_err(bad)? else {
        return Ok(None);
    };
    Ok(Some(Listen {
        host,
        port,
        params: words.map(String::from).collect(),
        line,
    }))
}

/// nginx's `listen` address forms: `port`, `addr`, `addr:port`, `*:port`, `[v6]`,
/// `[v6]:port`, `unix:path` (`None`).
fn parse_address(address: &str) -> Result<Option<(ListenHost, u16)>, &'static str> {
    if address.starts_with("unix:") {
        return Ok(None);
    }
    if let Some(rest) = address.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("missing \"]\"")?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| "not an IPv6 address")?;
        let port = match after {
            "" => DEFAULT_PORT,
            after => parse_port(
                after
                    .strip_prefix(':')
                    .ok_or("expected \":\" after \"]\"")?,
            )?,
        };
        return Ok(Some((ListenHost::Ip(IpAddr::V6(ip)), port)));
    }
    match address.split_once(':') {
        Some((host, port)) => Ok(Some((parse_host(host)?, parse_port(port)?))),
        None if address.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some((ListenHost::Any, parse_port(address)?)))
        }
        None => Ok(Some((parse_host(address)?, DEFAULT_PORT))),
    }
}

/// A port: decimal digits only, 1 to 65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    // At most five digits, so the u32 below cannot overflow.
    if s.len() > 5 {
        return Err("port out of range");
    }
    let value = s.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err("port out of range"),
    }
}

/// An unbracketed host: `*`, an IPv4 literal, an IPv6 literal (uhttpd's form) or a host name.
pub(crate) fn parse_host(host: &str) -> Result<ListenHost, &'static str> {
    if host.is_empty() {
        return Err("empty host");
    }
    if host == "*" {
        return Ok(ListenHost::Any);
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ListenHost::Ip(IpAddr::V4(ip)));
    }
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        return Ok(ListenHost::Ip(IpAddr::V6(ip)));
    }
    let name_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if host.bytes().all(name_char) {
        Ok(ListenHost::Name(String::from(host)))
    } else {
        Err("not an address or host name")
    }
}

/// Where to reach a web UI among `listens`: `(host:port to dial, tls)` of
/// [`web_ui_listen`]'s choice, the target being [`Listen::dial_target`].
pub fn web_ui_target(listens: &[Listen]) -> Option<(String, bool)> {
    web_ui_listen(listens).map(|l| (l.dial_target(), l.ssl()))
}

/// The listener a web UI is best reached through.
///
/// Listeners a TCP client cannot use (`quic`, `proxy_protocol`) are skipped. A TLS listener
/// wins over a plain one (the plain one usually redirects to it); among equals an IPv4 target
/// wins over an IPv6 one (so `listen [::]:443 ssl;` next to `listen 443 ssl;` gives
/// `127.0.0.1:443`, and `[::1]:443` only when nothing listens on IPv4 with TLS), then file
/// order.
pub fn web_ui_listen(listens: &[Listen]) -> Option<&Listen> {
    listens
        .iter()
        .enumerate()
        .filter(|(_, l)| l.dialable())
        .min_by_key(|(i, l)| (!l.ssl(), l.dials_ipv6(), *i))
        .map(|(_, l)| l)
}

/// An open block while parsing.
struct Block {
    /// Line of the directive that opened it.
    line: usize,
    /// Whether it is a `server` block (for `ssl on;`).
    server: bool,
    /// Index of its first listen in the output.
    first_listen: usize,
    /// `ssl on;` seen directly inside it.
    ssl_on: bool,
}

enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
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

    /// The next token and the line it starts on.
    fn next_token(&mut self) -> Result<Option<(Token, usize)>, NginxError> {
        loop {
            let Some(&c) = self.chars.peek() else {
                return Ok(None);
            };
            let line = self.line;
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.bump();
                }
                '#' => while self.chars.next_if(|&c| c != '\n').is_some() {},
                ';' | '{' | '}' => {
                    self.bump();
                    let token = match c {
                        ';' => Token::Semicolon,
                        '{' => Token::Open,
                        _ => Token::Close,
                    };
                    return Ok(Some((token, line)));
                }
                '"' | '\'' => return self.quoted(c).map(|w| Some((Token::Word(w), line))),
                _ => return Ok(Some((Token::Word(self.word()), line))),
            }
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, NginxError> {
        let line = self.line;
        self.bump();
        let mut word = String::new();
        loop {
            match self.bump() {
                None => return Err(NginxError::UnterminatedQuote { line, quote }),
                Some(c) if c == quote => break,
                Some('\\') => match self.bump() {
                    None => return Err(NginxError::UnterminatedQuote { line, quote }),
                    Some(e) => push_escaped(&mut word, e),
                },
                Some(c) => word.push(c),
            }
        }
        match self.chars.peek() {
            None | Some(' ' | '\t' | '\r' | '\n' | ';' | '{' | ')') => Ok(word),
            Some(&found) => Err(NginxError::AfterQuote {
                line: self.line,
                found,
            }),
        }
    }

    fn word(&mut self) -> String {
        let mut word = String::new();
        let mut after_dollar = false;
        while let Some(&c) = self.chars.peek() {
            match c {
                '{' if after_dollar => {}
                ' ' | '\t' | '\r' | '\n' | ';' | '{' => break,
                _ => {}
            }
            self.bump();
            after_dollar = c == '$';
            if c == '\\' {
                match self.bump() {
                    Some(e) => push_escaped(&mut word, e),
                    None => word.push('\\'),
                }
                after_dollar = false;
            } else {
                word.push(c);
            }
        }
        word
    }
}

/// nginx's escapes, in quoted strings and words alike; any other escaped character keeps its
/// backslash.
fn push_escaped(word: &mut String, e: char) {
    match e {
        '"' | '\'' | '\\' => word.push(e),
        't' => word.push('\t'),
        'r' => word.push('\r'),
        'n' => word.push('\n'),
        other => {
            word.push('\\');
            word.push(other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const NS_UI_CONF: &str =
        include_str!("../../tests/fixtures/nethsecurity/etc/nginx/conf.d/ns-ui.conf");

    fn one(text: &str) -> Listen {
        let found = listens(text).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        found.into_iter().next().unwrap()
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> ListenHost {
        ListenHost::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    #[test]
    fn reads_ipv4_wildcard_with_ssl() {
        let l = one("listen 0.0.0.0:9090 ssl;");
        assert_eq!(l.host, v4(0, 0, 0, 0));
        assert_eq!(l.port, 9090);
        assert!(l.ssl());
        assert_eq!(l.dial_target(), "127.0.0.1:9090");
    }

    #[test]
    fn reads_ipv6_wildcard_with_parameters() {
        let l = one("listen [::]:443 ssl http2;");
        assert_eq!(l.host, ListenHost::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert_eq!(l.port, 443);
        assert_eq!(l.params, vec!["ssl", "http2"]);
        assert_eq!(l.dial_target(), "[::1]:443");
    }

    #[test]
    fn ignores_trailing_comment() {
        let l = one("listen 80; # comment");
        assert_eq!((&l.host, l.port, l.ssl()), (&ListenHost::Any, 80, false));
    }

    #[test]
    fn ignores_commented_out_listen() {
        let found = listens("server {\n    # listen 1234 ssl;\n    listen 8080;\n}\n").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].port, found[0].line), (8080, 3));
    }

    #[test]
    fn reads_listen_spread_over_lines() {
        let l = one("server {\n  listen\n    127.0.0.1:8443\n    ssl;\n}");
        assert_eq!(
            (&l.host, l.port, l.ssl(), l.line),
            (&v4(127, 0, 0, 1), 8443, true, 2)
        );
    }

    #[test]
    fn reads_quoted_values_with_escapes() {
        let l = one("listen \"[::1]:8443\" 'ssl' \"default\\_server\";");
        assert_eq!(l.dial_target(), "[::1]:8443");
        assert_eq!(l.params, vec!["ssl", "default\\_server"]);
        let found = listens("add_header X-A \"a;b{c}#d\"; listen '10.0.0.1:81';").unwrap();
        assert_eq!(found[0].dial_target(), "10.0.0.1:81");
    }

    #[test]
    fn reads_every_address_form() {
        let cases: &[(&str, ListenHost, u16)] = &[
            ("9090", ListenHost::Any, 9090),
            ("*:80", ListenHost::Any, 80),
            ("*", ListenHost::Any, 80),
            (
                "localhost:80",
                ListenHost::Name(String::from("localhost")),
                80,
            ),
            ("localhost", ListenHost::Name(String::from("localhost")), 80),
            ("192.168.1.1", v4(192, 168, 1, 1), 80),
            ("[::1]", ListenHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 80),
            (
                "[::1]:8443",
                ListenHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                8443,
            ),
        ];
        for (address, host, port) in cases {
            let l = one(&alloc::format!("listen {address};"));
            assert_eq!((&l.host, l.port), (host, *port), "{address}");
        }
    }

    #[test]
    fn skips_unix_sockets() {
        let found = listens("listen unix:/var/run/nginx.sock; listen 81;").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].port, 81);
    }

    #[test]
    fn finds_listens_at_any_depth() {
        let text = "http {\n server { listen 80; location / { root /www; } }\n}\nstream { server { listen 5353; } }";
        let ports: Vec<u16> = listens(text).unwrap().iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![80, 5353]);
    }

    #[test]
    fn keeps_variables_with_braces_in_words() {
        let text = "log_format x '${body_bytes_sent}B' ${request_time}s; listen 82;";
        assert_eq!(one(text).port, 82);
    }

    #[test]
    fn applies_ssl_on_to_its_server_block_only() {
        let found = listens("server { listen 443; ssl on; } server { listen 80; }").unwrap();
        assert!(found[0].ssl());
        assert!(!found[1].ssl());
    }

    #[test]
    fn rejects_bad_ports_naming_the_line() {
        for bad in [
            "0",
            "65536",
            "99999999999999999999",
            "80:x",
            "ex@mple",
            "1.2.3.4:",
            "[::1]x",
            "[::1",
        ] {
            let text = alloc::format!("server {{\n  listen {bad};\n}}");
            let err = listens(&text).unwrap_err();
            assert!(
                matches!(err, NginxError::BadListen { line: 2, .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().starts_with("line 2: "), "{err}");
        }
    }

    #[test]
    fn rejects_malformed_syntax_naming_the_line() {
        let cases: &[(&str, NginxError)] = &[
            (
                "listen 80;\nlisten '81;\n",
                NginxError::UnterminatedQuote {
                    line: 2,
                    quote: '\'',
                },
            ),
            (
                "listen \"81\"x;",
                NginxError::AfterQuote {
                    line: 1,
                    found: 'x',
                },
            ),
            (
                "server {\n listen 80;\n",
                NginxError::UnclosedBlock { line: 1 },
            ),
            (
                "listen 80;\n}",
                NginxError::Unexpected {
                    line: 2,
                    found: '}',
                },
            ),
            (
                "server { listen 80 }",
                NginxError::Unexpected {
                    line: 1,
                    found: '}',
                },
            ),
            (
                "\n;",
                NginxError::Unexpected {
                    line: 2,
                    found: ';',
                },
            ),
            (
                "{}",
                NginxError::Unexpected {
                    line: 1,
                    found: '{',
                },
            ),
            ("listen 80", NginxError::UnterminatedDirective { line: 1 }),
            ("listen;", NginxError::ListenWithoutAddress { line: 1 }),
            ("listen 80 {}", NginxError::ListenBlock { line: 1 }),
        ];
        for (text, want) in cases {
            assert_eq!(listens(text).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn one_bad_listen_fails_the_file() {
        // nginx refuses the whole file, so the good listen is not reported either.
        assert!(listens("listen 443 ssl;\nlisten 70000;").is_err());
    }

    #[test]
    fn rejects_oversized_input() {
        let text = " ".repeat(MAX_CONFIG_BYTES + 1);
        assert!(matches!(listens(&text), Err(NginxError::TooLarge { .. })));
    }

    #[test]
    fn reads_nethsecurity_ns_ui_conf() {
        let found = listens(NS_UI_CONF).unwrap();
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|l| l.port == 9090 && l.ssl()));
        assert_eq!(
            web_ui_target(&found),
            Some((String::from("127.0.0.1:9090"), true))
        );
    }

    #[test]
    fn prefers_tls_then_ipv4_then_file_order() {
        let pick = |text: &str| web_ui_target(&listens(text).unwrap());
        let s = String::from;
        assert_eq!(
            pick("listen 80; listen 443 ssl;"),
            Some((s("127.0.0.1:443"), true))
        );
        assert_eq!(
            pick("listen [::]:443 ssl; listen 443 ssl;"),
            Some((s("127.0.0.1:443"), true))
        );
        assert_eq!(
            pick("listen [::]:443 ssl; listen 80;"),
            Some((s("[::1]:443"), true))
        );
        assert_eq!(
            pick("listen [::]:443 ssl ipv6only=off;"),
            Some((s("127.0.0.1:443"), true))
        );
        assert_eq!(
            pick("listen 10.0.0.1:81; listen 82;"),
            Some((s("10.0.0.1:81"), false))
        );
        assert_eq!(
            pick("listen 443 quic; listen 8080;"),
            Some((s("127.0.0.1:8080"), false))
        );
        assert_eq!(pick("listen 443 ssl proxy_protocol;"), None);
        assert_eq!(pick("server_name _;"), None);
    }
}

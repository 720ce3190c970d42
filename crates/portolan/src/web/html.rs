//! HTML written by hand, with one rule: every string that did not come from this file goes
//! through [`Esc`] (a process name from /proc, a banner from the network, a path, a query
//! parameter). `Esc` first makes control bytes visible as the terminal renderer does
//! (`\x1b` shows as the four characters `\x1b`, not as an invisible escape), then escapes
//! the five characters HTML gives meaning to, so a string is text in an element and in a
//! quoted attribute alike.

use std::fmt::{self, Write as _};

use portolan_core::escape::for_terminal;

/// Untrusted text, escaped when written.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let visible = for_terminal(self.0);
        let mut last = 0;
        for (i, c) in visible.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&visible[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&visible[last..])
    }
}

/// Percent-encodes a query parameter value (for links this server writes).
pub fn url_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The navigation entries, and which one a page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Map,
    Table,
    Port,
    History,
    Scans,
}

/// Everything around a page's content: head (styles, script, the CSRF token), the header
/// with this machine's name and the navigation.
#[derive(Debug)]
pub struct Frame<'a> {
    pub title: &'a str,
    pub host: &'a str,
    pub nav: Nav,
    pub csrf: Option<&'a str>,
    pub actions: bool,
}

impl Frame<'_> {
    pub fn open(&self, out: &mut String) {
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"csrf-token\" content=\"{}\">\
             <title>{} · {} · portolan</title>\
             <link rel=\"icon\" href=\"/assets/icon.svg\" type=\"image/svg+xml\">\
             <link rel=\"stylesheet\" href=\"/assets/app.css\">\
             <script src=\"/assets/app.js\" defer></script></head>\
             <body data-actions=\"{}\"><header><a class=\"brand\" href=\"/\">portolan</a>\
             <span class=\"host\">{}</span><nav>",
            Esc(self.csrf.unwrap_or("")),
            Esc(self.title),
            Esc(self.host),
            u8::from(self.actions),
            Esc(self.host),
        );
        for (nav, href, label) in [
            (Nav::Map, "/", "Map"),
            (Nav::Table, "/?view=table", "Table"),
            (Nav::History, "/history", "History"),
            (Nav::Scans, "/scans", "Scans"),
        ] {
            let cur = if nav == self.nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{cur}>{label}</a>");
        }
        out.push_str(
            "<form class=\"jump\" action=\"/ports\" method=\"get\"><input name=\"port\" \
             inputmode=\"numeric\" placeholder=\"port…\" aria-label=\"go to port\" size=\"6\"></form>\
             </nav></header><main>",
        );
    }

    pub fn close(out: &mut String) {
        out.push_str("</main></body></html>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_bytes_become_text() {
        let s = Esc("<script>alert('x')</script>\u{1b}[31m&\"").to_string();
        assert_eq!(
            s,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\\x1b[31m&amp;&quot;"
        );
        assert!(!s.contains('<') && !s.contains('\u{1b}'));
    }

    #[test]
    fn params_encoded() {
        assert_eq!(url_param("a b&c=<"), "a%20b%26c%3D%3C");
    }
}

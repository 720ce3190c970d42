//! `portolan audit` findings as test-report UIs read them: JUnit XML, one test case per
//! finding. XML text goes through the one escaper, `render::xml`.

use std::fmt::Write as _;
use std::io::{self, Write};

use portolan_audit::{Finding, Severity};

use super::sarif::location;

/// Text for XML content and attributes: the one escaper, `render::xml`.
fn xml(s: &str) -> String {
    super::xml::escape(s)
}

/// JUnit XML: one test case per finding, failed when it is at or above `fail_on` and not
/// accepted by an exception (what makes `audit` exit 1), skipped when accepted, passed
/// (kept for the record) otherwise.
pub fn junit(found: &[Finding], fail_on: Severity) -> String {
    let failing = found.iter().filter(|f| f.fails(fail_on)).count();
    let skipped = found.iter().filter(|f| f.accepted.is_some()).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"portolan audit\" tests=\"{}\" failures=\"{failing}\" skipped=\"{skipped}\">",
        found.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"portolan audit\" tests=\"{}\" failures=\"{failing}\" skipped=\"{skipped}\">",
        found.len()
    );
    for f in found {
        let name = match location(f) {
            Some(l) => format!("{} {l}", f.id),
            None => f.id.to_owned(),
        };
        let _ = write!(
            s,
            "    <testcase classname=\"portolan.audit.{}\" name=\"{}\">",
            xml(f.severity.as_str()),
            xml(&name)
        );
        let body = format!("{}\nfix: {}", f.detail, f.fix);
        if let Some(why) = &f.accepted {
            let _ = write!(s, "<skipped message=\"accepted: {}\"/>", xml(why));
        } else if f.fails(fail_on) {
            let _ = write!(
                s,
                "<failure message=\"{}\" type=\"{}\">{}</failure>",
                xml(&f.title),
                xml(f.severity.as_str()),
                xml(&body)
            );
        } else {
            let _ = write!(s, "<system-out>{}</system-out>", xml(&body));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// Writes the JUnit document.
pub fn write(w: &mut dyn Write, found: &[Finding], fail_on: Severity) -> io::Result<()> {
    w.write_all(junit(found, fail_on).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portolan_audit::SocketRef;
    use portolan_core::Protocol;

    #[test]
    fn control_characters_are_made_visible_and_markup_escaped() {
        let f = Finding {
            id: "PA001-test",
            severity: Severity::High,
            title: "<b>\u{1b}[31mred</b>".into(),
            detail: "a & b".into(),
            fix: "\"quoted\" 'x'".into(),
            socket: Some(SocketRef {
                proto: Protocol::Tcp,
                addr: "::1".parse().unwrap(),
                port: 22,
            }),
            owner: None,
            accepted: None,
        };
        let x = junit(&[f], Severity::High);
        assert!(!x.contains('\u{1b}'), "{x}");
        assert!(x.contains("&lt;b&gt;"), "{x}");
        assert!(x.contains("a &amp; b"), "{x}");
        assert!(x.contains("tcp/[::1]:22"), "{x}");
        assert!(x.contains("failures=\"1\""), "{x}");
    }
}

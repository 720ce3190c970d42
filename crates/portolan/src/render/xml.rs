//! The one XML escaper, for nmap XML, JUnit and any later XML writer. XML 1.0 allows no
//! control characters, not even as character references, so they are first made visible
//! text (`\x1b`, as on a terminal); then the five markup characters are escaped, which makes
//! the result safe in attribute values and in text alike.

use portolan_core::escape::for_terminal;

/// `s` made safe for an XML attribute value or text node.
pub fn escape(s: &str) -> String {
    let s = for_terminal(s);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters() {
        assert_eq!(escape("a\"<b>&'\x1b"), "a&quot;&lt;b&gt;&amp;&apos;\\x1b");
        assert_eq!(escape("tab\there\u{7f}"), "tab\\there\\x7f");
    }
}

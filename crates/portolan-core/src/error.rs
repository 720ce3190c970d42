use thiserror::Error;

/// Why a piece of user input could not be parsed. Every variant names the input, so the
/// binary can print it as one line without context.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("empty {what}")]
    Empty { what: &'static str },
    #[error("invalid port `{input}`: a port is a number from 0 to 65535")]
    InvalidPort { input: String },
    #[error("port {input} is out of range: ports go from 0 to 65535")]
    PortOutOfRange { input: String },
    #[error("invalid port range `{input}`: {reason}")]
    InvalidRange { input: String, reason: &'static str },
    #[error("unknown protocol `{input}`: expected tcp, udp, sctp or dccp")]
    UnknownProtocol { input: String },
    #[error("invalid target `{input}`: {reason}")]
    InvalidTarget { input: String, reason: &'static str },
    #[error("invalid query `{input}`: {reason}")]
    InvalidQuery { input: String, reason: &'static str },
    #[error("unknown socket state `{input}`: expected one of {expected}")]
    UnknownState {
        input: String,
        expected: &'static str,
    },
}

/// Input echoed back in an error is cut short and escaped: it may be hostile or huge.
pub(crate) fn echo(input: &str) -> String {
    const MAX: usize = 40;
    let cut: String = input.chars().take(MAX).collect();
    let mut out = crate::escape::for_terminal(&cut).into_owned();
    if input.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

/// A parser's message placed in its input: `line L, column C: MESSAGE` when the parser
/// gave the byte span it stopped at, else the message alone. The message is escaped for a
/// terminal (parsers quote their input). For config files of every engine (TOML's errors
/// carry a span).
pub fn located(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let msg = crate::escape::for_terminal(message).into_owned();
    match span {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg,
    }
}

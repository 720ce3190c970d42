//! The crate's one error type. Every variant that comes from the database names the
//! operation and the queue's URL as people may see it (the password replaced by `***`);
//! the server's own text is scrubbed of the password and escaped for a terminal before it
//! is kept, so neither `Display` nor `Debug` can leak the secret or a control sequence.

/// What went wrong, and during what.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The text is not a `postgres://` or `postgresql://` URL at all (a file path, an
    /// `http://` address, a typo): said plainly rather than as a parser's complaint.
    #[error(
        "not a PostgreSQL URL: {url} (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
    )]
    NotPostgres { url: String },
    /// A `postgres://` URL that the client cannot read (a bad port, an unknown option).
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The server could not be reached, or refused us.
    #[error("PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// A statement failed; `action` says which operation was under way.
    #[error("queue at {url}: {action}: {reason}")]
    Db {
        url: String,
        action: &'static str,
        reason: String,
    },
    /// The database holds a newer schema than this build knows: writing to it could
    /// corrupt what a newer portolan keeps there.
    #[error("queue at {url}: schema version {found} is newer than this build's ({supported}); upgrade portolan")]
    SchemaTooNew {
        url: String,
        found: i32,
        supported: i32,
    },
    /// No scan has this id.
    #[error("{action}: there is no scan {id}")]
    NoSuchScan { action: &'static str, id: i64 },
    /// An argument this crate refuses before asking the database (zero chunks, a rate
    /// that is not a positive number, a spec PostgreSQL cannot store).
    #[error("{action}: {reason}")]
    Invalid {
        action: &'static str,
        reason: String,
    },
    /// Something stored in the queue does not read back (written by hand, or by another
    /// program): named by where it is.
    #[error("{action}: {what} does not read: {reason}")]
    Corrupt {
        action: &'static str,
        what: String,
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

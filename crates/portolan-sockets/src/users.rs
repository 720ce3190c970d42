//! uid -> user name, from /etc/passwd. Read directly rather than through NSS (getpwuid),
//! which would need `unsafe` FFI; users that only exist in LDAP/SSSD show as numbers.

use std::collections::HashMap;

/// User names by uid.
#[derive(Debug, Clone, Default)]
pub struct UserNames {
    by_uid: HashMap<u32, String>,
}

impl UserNames {
    /// Loads /etc/passwd; an unreadable file gives an empty table (uids stay numeric).
    pub fn load() -> Self {
        std::fs::read_to_string("/etc/passwd")
            .map_or_else(|_| UserNames::default(), |t| Self::parse(&t))
    }

    /// Parses passwd-format text, skipping malformed lines.
    pub fn parse(text: &str) -> Self {
        let mut by_uid = HashMap::new();
        for line in text.lines() {
            let mut f = line.split(':');
            let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if name.is_empty()
                || name.starts_with('#')
                || name.starts_with('+')
                || name.starts_with('-')
            {
                continue;
            }
            if let Ok(uid) = uid.parse::<u32>() {
                by_uid.entry(uid).or_insert_with(|| name.to_string());
            }
        }
        UserNames { by_uid }
    }

    pub fn name(&self, uid: u32) -> Option<&str> {
        self.by_uid.get(&uid).map(String::as_str)
    }

    pub fn uid(&self, name: &str) -> Option<u32> {
        self.by_uid
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(u, _)| *u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd() {
        let u = UserNames::parse("root:x:0:0:root:/root:/bin/bash\nbroken\n+nis::::\nalice:x:1000:1000::/home/a:/bin/sh\nalias:x:1000:1000::/:/bin/sh\n");
        assert_eq!(u.name(0), Some("root"));
        assert_eq!(u.name(1000), Some("alice"));
        assert_eq!(u.uid("alice"), Some(1000));
        assert_eq!(u.name(5), None);
    }
}

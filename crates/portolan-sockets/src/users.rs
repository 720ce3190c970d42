//! uid <-> user name through NSS (`getpwuid_r`/`getpwnam_r`, by the `uzers` crate), so
//! users that live in LDAP, SSSD or systemd-homed are named as `ss`, `ls -l` and `id`
//! name them. Each uid is looked up once per table.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;

use portolan_core::escape::bytes_lossless;

/// User names by uid, filled by [`UserNames::resolve`].
#[derive(Debug, Clone, Default)]
pub struct UserNames {
    /// `None`: looked up, and NSS knows no such user.
    by_uid: HashMap<u32, Option<String>>,
}

impl UserNames {
    /// Looks up every uid not looked up before, once each.
    pub fn resolve(&mut self, uids: impl IntoIterator<Item = u32>) {
        for uid in uids {
            self.by_uid.entry(uid).or_insert_with(|| {
                uzers::get_user_by_uid(uid).map(|u| bytes_lossless(u.name().as_bytes()))
            });
        }
    }

    /// The name of a uid looked up by [`UserNames::resolve`]; `None` when NSS has no such
    /// user or the uid was not looked up. Invalid UTF-8 is shown as `\xNN`.
    pub fn name(&self, uid: u32) -> Option<&str> {
        self.by_uid.get(&uid)?.as_deref()
    }

    /// A user name's uid, through NSS; a number is taken as a uid as it is.
    pub fn uid_of(name: &str) -> Option<u32> {
        name.parse()
            .ok()
            .or_else(|| uzers::get_user_by_name(name).map(|u| u.uid()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_nss() {
        let mut u = UserNames::default();
        u.resolve([0, 0, 4_000_000_000]);
        assert_eq!(u.name(0), Some("root"));
        assert_eq!(u.name(4_000_000_000), None);
        assert_eq!(u.name(1), None, "not looked up");
        assert_eq!(UserNames::uid_of("root"), Some(0));
        assert_eq!(UserNames::uid_of("1234"), Some(1234));
        assert_eq!(UserNames::uid_of("no-such-user-here"), None);
    }

    #[test]
    fn agrees_with_getent_for_the_current_user() {
        // `id -un` asks NSS too: whatever the source of the entry, both must agree.
        let me = rustix::process::geteuid().as_raw();
        let out = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let want = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut u = UserNames::default();
        u.resolve([me]);
        assert_eq!(u.name(me), Some(want.as_str()));
        assert_eq!(UserNames::uid_of(&want), Some(me));
    }
}

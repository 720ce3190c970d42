//! Naming the systemd unit or container that owns a socket, from a cgroup path. The kernel
//! records each socket's cgroup (v2 id) in sock_diag, readable without privilege, so this
//! names owners even when their processes cannot be read.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Who a cgroup belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupOwner {
    /// The cgroup path, e.g. `/system.slice/nginx.service`.
    pub path: String,
    /// The innermost systemd service or scope unit, e.g. `nginx.service`.
    pub unit: Option<String>,
    /// True when `unit` is a user unit (under `user@UID.service`).
    pub user_unit: bool,
    /// A container, as `runtime:short-id` (`docker:3f2a9c1b7d4e`) or `lxc:name`.
    pub container: Option<String>,
}

impl CgroupOwner {
    /// What to call the owner in one word: the container if any, else the unit.
    pub fn label(&self) -> Option<&str> {
        self.container.as_deref().or(self.unit.as_deref())
    }
}

fn short_id(id: &str) -> Option<&str> {
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| &id[..12])
}

/// Classifies a cgroup path. Pure; never fails.
pub fn classify_cgroup(path: &str) -> CgroupOwner {
    let mut owner = CgroupOwner {
        path: path.to_string(),
        ..CgroupOwner::default()
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut in_user_manager = false;
    for (i, part) in parts.iter().enumerate() {
        // Containers, by runtime naming conventions.
        let container = if let Some(rest) = part
            .strip_prefix("docker-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            short_id(rest).map(|id| format!("docker:{id}"))
        } else if let Some(rest) = part
            .strip_prefix("libpod-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            short_id(rest).map(|id| format!("podman:{id}"))
        } else if let Some(rest) = part
            .strip_prefix("cri-containerd-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            short_id(rest).map(|id| format!("containerd:{id}"))
        } else if let Some(rest) = part
            .strip_prefix("crio-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            short_id(rest).map(|id| format!("cri-o:{id}"))
        } else if i > 0 && parts[i - 1] == "docker" {
            short_id(part).map(|id| format!("docker:{id}"))
        } else if i > 1
            && parts[i - 1].starts_with("pod")
            && parts[..i - 1].iter().any(|p| p.starts_with("kubepods"))
        {
            // The kubelet's cgroupfs layout: /kubepods[/burstable|/besteffort]/pod<uid>/<id>
            // (the runtime is not in the path; the systemd layout names it, as above).
            short_id(part).map(|id| format!("kubernetes:{id}"))
        } else if let Some(name) = part.strip_prefix("lxc.payload.") {
            Some(format!("lxc:{name}"))
        } else if part.starts_with("machine-") {
            part.strip_prefix("machine-")
                .and_then(|r| r.strip_suffix(".scope"))
                .map(|name| format!("machine:{}", name.replace("\\x2d", "-")))
        } else {
            None
        };
        if container.is_some() {
            owner.container = container;
        }
        #[allow(clippy::case_sensitive_file_extension_comparisons)]
        // unit suffixes are lower-case by definition
        let is_user_manager = part.starts_with("user@") && part.ends_with(".service");
        if is_user_manager {
            in_user_manager = true;
            owner.unit = Some((*part).to_string());
            owner.user_unit = false;
            continue;
        }
        #[allow(clippy::case_sensitive_file_extension_comparisons)]
        // unit suffixes are lower-case by definition
        let is_unit = part.ends_with(".service") || part.ends_with(".scope");
        if is_unit {
            owner.unit = Some((*part).to_string());
            owner.user_unit = in_user_manager;
        }
    }
    owner
}

/// Finds the cgroup2 mount point from /proc/self/mountinfo.
fn cgroup2_root() -> Option<PathBuf> {
    // Bytes, read leniently: any other mount point may be named with bytes that are not
    // UTF-8, and must not hide the cgroup2 line.
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let info = String::from_utf8_lossy(&info);
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_ascii_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_ascii_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Maps cgroup v2 ids (the inode numbers of cgroup directories) to paths by walking the
/// cgroup2 hierarchy, stopping once every id is found. Ids not found are left out.
pub(crate) fn resolve_ids(ids: &HashSet<u64>) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let Some(root) = cgroup2_root() else {
        return out;
    };
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.clone(), 0)];
    let mut budget = 100_000usize; // directories visited at most: bounded on any machine
    while let Some((dir, depth)) = stack.pop() {
        if out.len() == ids.len() || budget == 0 {
            break;
        }
        budget -= 1;
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if ids.contains(&meta.ino()) {
            let rel = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            // Lossless: a directory may be named with bytes that are not UTF-8.
            out.insert(
                meta.ino(),
                format!(
                    "/{}",
                    portolan_core::escape::bytes_lossless(rel.as_os_str().as_bytes())
                ),
            );
        }
        if depth >= 32 {
            continue;
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_and_user_units() {
        let o = classify_cgroup("/system.slice/nginx.service");
        assert_eq!(o.unit.as_deref(), Some("nginx.service"));
        assert!(!o.user_unit && o.container.is_none());
        let o =
            classify_cgroup("/user.slice/user-1000.slice/user@1000.service/app.slice/vite.service");
        assert_eq!(o.unit.as_deref(), Some("vite.service"));
        assert!(o.user_unit);
        let o = classify_cgroup("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(o.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(classify_cgroup("/").unit, None);
    }

    #[test]
    fn containers() {
        let id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";
        let o = classify_cgroup(&format!("/system.slice/docker-{id}.scope"));
        assert_eq!(o.container.as_deref(), Some("docker:3f2a9c1b7d4e"));
        let o = classify_cgroup(&format!("/docker/{id}"));
        assert_eq!(o.container.as_deref(), Some("docker:3f2a9c1b7d4e"));
        for path in [
            format!("/kubepods/burstable/pod3b2c9e4f-1a2b-4c3d-9e8f-0123456789ab/{id}"),
            format!("/kubepods/pod3b2c9e4f-1a2b-4c3d-9e8f-0123456789ab/{id}"),
        ] {
            let o = classify_cgroup(&path);
            assert_eq!(
                o.container.as_deref(),
                Some("kubernetes:3f2a9c1b7d4e"),
                "{path}"
            );
        }
        let o = classify_cgroup(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3b2c.slice/cri-containerd-{id}.scope"
        ));
        assert_eq!(o.container.as_deref(), Some("containerd:3f2a9c1b7d4e"));
        // A QoS class directory alone is not a container.
        assert_eq!(classify_cgroup("/kubepods/burstable").container, None);
        let o = classify_cgroup(&format!("/machine.slice/libpod-{id}.scope/container"));
        assert_eq!(o.container.as_deref(), Some("podman:3f2a9c1b7d4e"));
        let o = classify_cgroup("/lxc.payload.web1/system.slice/nginx.service");
        assert_eq!(o.container.as_deref(), Some("lxc:web1"));
        assert_eq!(o.unit.as_deref(), Some("nginx.service"));
    }

    #[test]
    fn hostile_paths_do_not_panic() {
        for p in [
            "",
            "//",
            "/docker/",
            "/docker-.scope",
            "/\u{1b}[2J.service",
            &"a/".repeat(10_000),
        ] {
            let _ = classify_cgroup(p);
        }
    }
}

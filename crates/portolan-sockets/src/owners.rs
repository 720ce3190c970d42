//! Which processes hold which sockets: a walk over `/proc/*/fd`, the only way Linux offers.
//!
//! This is the expensive part of any `ss -p`/`lsof`: one readlink per open file in the
//! system. We keep it cheap by (1) looking only for the inodes asked about, in a hash set,
//! (2) reading links into a stack buffer relative to an open directory fd, (3) splitting
//! the walk over threads for full scans, and (4) for targeted questions, visiting small
//! fd tables first and stopping once every socket has an owner. A big fd table related to
//! an owner (its parent or child, which may share the socket) is then checked only at the
//! descriptor numbers an inherited or passed socket would have, so a parent of many big
//! unrelated processes (a shell, a supervisor, pid 1) cannot turn the walk into a full one.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;

use rustix::fs::{openat, readlinkat_raw, Dir, Mode, OFlags, CWD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanMode {
    All,
    Targeted,
}

#[derive(Debug, Default)]
pub(crate) struct OwnerMap {
    /// Socket inode -> pids holding it (ascending).
    pub by_inode: HashMap<u64, Vec<u32>>,
    /// Processes whose fd table could not be read (other users' processes without root).
    pub unreadable: Vec<u32>,
    /// Processes not inspected because this process ran out of file descriptors (EMFILE
    /// or ENFILE), even when retried one at a time after the walk: a limit of ours, not a
    /// property of theirs.
    pub fd_limited: Vec<u32>,
    /// Fd tables opened and fd links read: what the walk cost.
    pub tables: usize,
    pub links: usize,
    /// Descriptor numbers at which the owners found hold wanted sockets.
    pub owner_fds: HashSet<u32>,
}

/// Lists the pids in /proc.
pub(crate) fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn open_fd_dir(pid: u32) -> rustix::io::Result<OwnedFd> {
    openat(
        CWD,
        format!("/proc/{pid}/fd"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Parses `socket:[12345]`.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

enum Visit {
    /// The wanted inodes found (with the descriptor number holding each), and the number
    /// of links read.
    Found(Vec<(u64, u32)>, usize),
    Unreadable,
    /// Out of file descriptors (EMFILE, ENFILE): the table was not opened.
    NoFds,
}

fn out_of_fds(e: rustix::io::Errno) -> bool {
    matches!(e, rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
}

/// Why a table could not be read.
fn failed(e: rustix::io::Errno) -> Visit {
    if out_of_fds(e) {
        Visit::NoFds
    } else {
        Visit::Unreadable
    }
}

/// Reads one process's fd table and returns the wanted socket inodes it holds.
fn visit(pid: u32, wanted: &HashSet<u64>) -> Visit {
    match open_fd_dir(pid) {
        Ok(dirfd) => read_table(&dirfd, wanted),
        Err(e) => failed(e),
    }
}

/// [`visit`] on an fd directory already open.
fn read_table(dirfd: &OwnedFd, wanted: &HashSet<u64>) -> Visit {
    let mut dir = match Dir::read_from(dirfd) {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let mut links = 0;
    let mut found = Vec::new();
    let mut denied = false;
    let mut buf = [0u8; 64];
    while let Some(Ok(entry)) = dir.read() {
        let name = entry.file_name();
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        // A link longer than the buffer is a file path, never `socket:[...]`.
        links += 1;
        let n = match readlinkat_raw(dirfd, name, &mut buf[..]) {
            Ok(n) => n,
            Err(e) => {
                // Listing may be allowed where reading the links is not (ptrace rules).
                denied |= matches!(e, rustix::io::Errno::ACCESS | rustix::io::Errno::PERM);
                continue;
            }
        };
        if let Some(ino) = socket_inode(&buf[..n]) {
            if wanted.contains(&ino) {
                let fd = std::str::from_utf8(name.to_bytes())
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(u32::MAX);
                found.push((ino, fd));
            }
        }
    }
    if denied && found.is_empty() {
        return Visit::Unreadable;
    }
    Visit::Found(found, links)
}

/// Whether the process whose fd directory is `dirfd` holds a wanted socket at one of the
/// descriptors named `fds` (decimal numbers): one readlink per number instead of one per
/// open file. Also returns the number of links read.
fn probe(dirfd: &OwnedFd, fds: &[String], wanted: &HashSet<u64>) -> (bool, usize) {
    let mut buf = [0u8; 64];
    let mut links = 0;
    for fd in fds {
        links += 1;
        if let Ok(n) = readlinkat_raw(dirfd, fd.as_str(), &mut buf[..]) {
            if socket_inode(&buf[..n]).is_some_and(|i| wanted.contains(&i)) {
                return (true, links);
            }
        }
    }
    (false, links)
}

/// Descriptor numbers where a big related process would hold a socket its relative holds:
/// the numbers the owners use (a forked child inherits them there: pre-fork workers), and
/// 3 onwards, one per wanted socket (where socket activation passes them, `LISTEN_FDS`).
fn inherited_fd_numbers(owner_fds: &HashSet<u32>, wanted: usize) -> Vec<u32> {
    const LISTEN_FDS_START: u32 = 3;
    const MAX_PASSED: u32 = 64;
    let passed = u32::try_from(wanted).unwrap_or(MAX_PASSED).min(MAX_PASSED);
    let mut v: Vec<u32> = owner_fds
        .iter()
        .copied()
        .filter(|&fd| fd != u32::MAX)
        .chain(LISTEN_FDS_START..LISTEN_FDS_START + passed)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Number of open fds of a process: `stat(/proc/PID/fd).st_size` (Linux 6.2+; older
/// kernels report 0 there). When the directory cannot be stat'ed at all (the process
/// exited, or is not ours to inspect) this is `u64::MAX`: such a process sorts last in a
/// targeted walk (treated like a big table, skipped once every socket has an owner) and
/// counts as the biggest table when balancing threads (its weight is capped there).
fn fd_count(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/fd")).map_or(u64::MAX, |m| m.len())
}

fn ppid_of(pid: u32) -> Option<u32> {
    // Bytes: the command name need not be UTF-8, and may contain spaces and parentheses;
    // the fields follow the last ')'.
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.iter().rposition(|&c| c == b')')? + 1..];
    std::str::from_utf8(rest)
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Reads big fd tables, smallest first and on every core, until every socket in `missing`
/// has an owner: a socket that only a big process holds (a bulk client whose ephemeral
/// port is the one asked about) costs its holders' tables, not every table. Returns the
/// tables read and the pids not read.
fn walk_until_found(
    big: &[u32],
    wanted: &HashSet<u64>,
    missing: HashSet<u64>,
) -> (Vec<(u32, Visit)>, Vec<u32>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 8)
        .min(big.len().max(1));
    let next = AtomicUsize::new(0);
    let missing = Mutex::new(missing);
    let all_found = |m: &Mutex<HashSet<u64>>| m.lock().map_or(true, |m| m.is_empty());
    let read: Vec<(u32, Visit)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while !all_found(&missing) {
                        let Some(&pid) = big.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let v = visit(pid, wanted);
                        if let (Visit::Found(inos, _), Ok(mut m)) = (&v, missing.lock()) {
                            for (i, _) in inos {
                                m.remove(i);
                            }
                        }
                        out.push((pid, v));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let taken = next.load(Ordering::Relaxed).min(big.len());
    (read, big[taken..].to_vec())
}

/// Fd tables up to this size are always visited by a targeted walk.
const SMALL_FD_TABLE: u64 = 4096;

pub(crate) fn scan(wanted: &HashSet<u64>, mode: ScanMode, only: Option<&[u32]>) -> OwnerMap {
    let mut map = OwnerMap::default();
    if wanted.is_empty() {
        return map;
    }
    let pids = only.map_or_else(all_pids, <[u32]>::to_vec);
    // A table skipped for want of descriptors is not counted: it is retried below.
    let record = |pid: u32, v: Visit, map: &mut OwnerMap| match v {
        Visit::Found(inos, links) => {
            map.tables += 1;
            map.links += links;
            for (ino, fd) in inos {
                map.by_inode.entry(ino).or_default().push(pid);
                map.owner_fds.insert(fd);
            }
        }
        Visit::Unreadable => {
            map.tables += 1;
            map.unreadable.push(pid);
        }
        Visit::NoFds => map.fd_limited.push(pid),
    };
    match mode {
        ScanMode::All => {
            let threads = std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(8);
            if threads <= 1 || pids.len() < 2 {
                for pid in pids {
                    let v = visit(pid, wanted);
                    record(pid, v, &mut map);
                }
            } else {
                // Balance the work by fd count: one huge fd table must not sit on one thread
                // with all the rest behind it.
                let mut sized: Vec<(u64, u32)> = pids.iter().map(|&p| (fd_count(p), p)).collect();
                sized.sort_unstable_by(|a, b| b.cmp(a));
                let mut buckets: Vec<(u64, Vec<u32>)> = vec![(0, Vec::new()); threads];
                for (n, pid) in sized {
                    let b = buckets
                        .iter_mut()
                        .min_by_key(|b| b.0)
                        .expect("threads >= 1");
                    b.0 += n.min(1 << 24) + 1;
                    b.1.push(pid);
                }
                let results: Vec<Vec<(u32, Visit)>> = std::thread::scope(|s| {
                    let handles: Vec<_> = buckets
                        .into_iter()
                        .map(|(_, pids)| {
                            s.spawn(move || {
                                pids.into_iter()
                                    .map(|p| (p, visit(p, wanted)))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    // A walker that panicked must not silently drop its share of the
                    // processes: re-raise its panic here.
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                        .collect()
                });
                for (pid, v) in results.into_iter().flatten() {
                    record(pid, v, &mut map);
                }
            }
        }
        ScanMode::Targeted => {
            let mut sized: Vec<(u64, u32)> = pids.iter().map(|&p| (fd_count(p), p)).collect();
            sized.sort_unstable();
            let mut visited: HashSet<u32> = HashSet::new();
            let mut missing: HashSet<u64> = wanted.clone();
            // Small fd tables are cheap: visit them all, so a sharer that is not family (a
            // listener passed over a unix socket) is still found. Only the big tables,
            // where the cost is, are skipped once every socket has an owner.
            let big = sized.split_off(sized.partition_point(|&(fds, _)| fds <= SMALL_FD_TABLE));
            for (_, pid) in sized {
                visited.insert(pid);
                let v = visit(pid, wanted);
                if let Visit::Found(inos, _) = &v {
                    for (i, _) in inos {
                        missing.remove(i);
                    }
                }
                record(pid, v, &mut map);
            }
            let big: Vec<u32> = big.into_iter().map(|(_, p)| p).collect();
            let (read, remaining) = if missing.is_empty() {
                (Vec::new(), big)
            } else {
                walk_until_found(&big, wanted, missing)
            };
            for (pid, v) in read {
                visited.insert(pid);
                record(pid, v, &mut map);
            }
            if !remaining.is_empty() {
                // Stopped early: a socket may still be shared with a parent (socket
                // activation, a pre-fork master) or a child (workers). Visit them too.
                let owners: HashSet<u32> = map.by_inode.values().flatten().copied().collect();
                let mut parents: HashMap<u32, u32> = HashMap::new();
                for &p in remaining.iter().chain(visited.iter()) {
                    if let Some(pp) = ppid_of(p) {
                        parents.insert(p, pp);
                    }
                }
                let mut family: HashSet<u32> = HashSet::new();
                for &o in &owners {
                    let mut cur = o;
                    while let Some(&pp) = parents.get(&cur) {
                        if pp == 0 || !family.insert(pp) {
                            break;
                        }
                        cur = pp;
                    }
                }
                // Descendants: repeat until no new pid joins (bounded by the pid count).
                let mut tree: HashSet<u32> = owners.clone();
                loop {
                    let before = tree.len();
                    for (&child, &parent) in &parents {
                        if tree.contains(&parent) {
                            tree.insert(child);
                        }
                    }
                    if tree.len() == before {
                        break;
                    }
                }
                family.extend(tree);
                // Every table left is big (the small ones were all visited): read one only
                // if it holds a wanted socket where inheritance or socket activation would
                // put it. A shell or supervisor that started both a listener and big
                // unrelated holders (or pid 1, for a socket-activated listener) then costs
                // a few readlinks per relative, not its whole descendants' fd tables.
                let probe_fds: Vec<String> = inherited_fd_numbers(&map.owner_fds, wanted.len())
                    .iter()
                    .map(u32::to_string)
                    .collect();
                for pid in remaining {
                    if !family.contains(&pid) || !visited.insert(pid) {
                        continue;
                    }
                    let v = match open_fd_dir(pid) {
                        Ok(dirfd) => match probe(&dirfd, &probe_fds, wanted) {
                            (false, links) => {
                                map.tables += 1;
                                map.links += links;
                                continue;
                            }
                            // A hit: read the whole table, through the same directory.
                            (true, links) => {
                                map.links += links;
                                read_table(&dirfd, wanted)
                            }
                        },
                        Err(e) => failed(e),
                    };
                    record(pid, v, &mut map);
                }
            }
        }
    }
    // Tables skipped for want of descriptors (threads walking in parallel each hold a
    // few): try once more one at a time, now that the walkers' descriptors are closed.
    for pid in std::mem::take(&mut map.fd_limited) {
        let v = visit(pid, wanted);
        record(pid, v, &mut map);
    }
    for pids in map.by_inode.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    map.unreadable.sort_unstable();
    map.fd_limited.sort_unstable();
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[99999999999999999999999]"), None);
    }

    #[test]
    fn finds_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = std::process::id();
        // The socket's inode, from our own fd table.
        let ino = {
            use std::os::fd::AsRawFd;
            let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
            socket_inode(link.as_os_str().as_encoded_bytes()).unwrap()
        };
        let wanted: HashSet<u64> = [ino].into();
        for mode in [ScanMode::All, ScanMode::Targeted] {
            let map = scan(&wanted, mode, None);
            assert_eq!(map.by_inode.get(&ino), Some(&vec![me]), "{mode:?}");
        }
        let map = scan(&wanted, ScanMode::All, Some(&[me]));
        assert_eq!(map.by_inode.get(&ino), Some(&vec![me]));
    }
}

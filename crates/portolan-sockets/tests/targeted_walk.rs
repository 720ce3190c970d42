//! The targeted owner walk (`who PORT`) stays bounded when the listener's holder is also
//! the parent of big processes that do not hold it (a shell or supervisor that started a
//! listener and big socket holders, pid 1 for socket activation), and still finds the big
//! relatives that do hold it: a pre-fork worker (same descriptor number) and a
//! socket-activated child (the socket moved to descriptor 3).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use portolan_core::{Port, PortRange, PortSpec};
use portolan_sockets::{Inventory, OwnerScan, Query};

/// Extra descriptors each big child opens: more than the walk's small-table size (4096).
const BIG: usize = 4500;

const FIXTURE: &str = r#"
import os, resource, socket, sys
BIG = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = BIG + 64
if hard != resource.RLIM_INFINITY and hard < want:
    print("NOFILE %d" % hard, flush=True)
    sys.exit(0)
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
# A few descriptors first, so the listener is not at 3 (where socket activation puts it).
pad = [os.open("/dev/null", os.O_RDONLY) for _ in range(4)]
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind(("127.0.0.1", 0))
l.listen(16)
assert l.fileno() != 3
port = l.getsockname()[1]
r, w = os.pipe()

def child(role):
    pid = os.fork()
    if pid:
        return pid
    os.close(r)
    if role == "unrelated":
        l.close()
    elif role == "client":
        l.close()
        c = socket.create_connection(("127.0.0.1", port))
    elif role == "activated":
        os.dup2(l.fileno(), 3, inheritable=True)
        l.close()
    hold = [os.open("/dev/null", os.O_RDONLY) for _ in range(BIG)]
    os.write(w, b"x")
    os.read(0, 1)  # until the test closes our stdin
    os._exit(0)

roles = sys.argv[2].split(",")
pids = [child(role) for role in roles]
os.close(w)
for _ in roles:
    assert os.read(r, 1) == b"x"
print("READY %d %d %s" % (l.getsockname()[1], os.getpid(),
      " ".join("%s:%d" % rp for rp in zip(roles, pids))), flush=True)
os.read(0, 1)
for p in pids:
    os.waitpid(p, 0)
"#;

struct Fixture {
    child: Child,
    port: u16,
    parent: u32,
    roles: Vec<(String, u32)>,
}

impl Fixture {
    fn pids_of(&self, role: &str) -> Vec<u32> {
        self.roles
            .iter()
            .filter(|(r, _)| r == role)
            .map(|&(_, p)| p)
            .collect()
    }
}

/// The query `portolan who PORT` makes (TCP only here).
fn who(port: u16) -> Query {
    Query {
        udp: false,
        ports: Some(PortSpec::from_ranges(vec![PortRange::single(Port::new(
            port,
        ))])),
        owners: OwnerScan::Targeted,
        ..Query::default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn start(roles: &str) -> Option<Fixture> {
    if !portolan_testsupport::skip_unless(portolan_testsupport::program("python3")) {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", FIXTURE, &BIG.to_string(), roles])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the fixture's READY line");
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.first() == Some(&"NOFILE") {
        portolan_testsupport::skip_or_fail(&format!(
            "the hard open-file limit ({}) is below the {} descriptors a big child needs",
            words[1],
            BIG + 64
        ));
        drop(child.stdin.take());
        let _ = child.wait();
        return None;
    }
    assert_eq!(words.first(), Some(&"READY"), "fixture said {line:?}");
    let roles = words[3..]
        .iter()
        .map(|w| {
            let (role, pid) = w.split_once(':').expect("role:pid");
            (role.to_string(), pid.parse().expect("pid"))
        })
        .collect();
    Some(Fixture {
        port: words[1].parse().expect("port"),
        parent: words[2].parse().expect("pid"),
        roles,
        child,
    })
}

/// Open descriptors of every process whose fd table the targeted walk always reads in full
/// (4096 or fewer): what the walk costs before any big table.
fn small_tables_links() -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| std::fs::metadata(format!("/proc/{p}/fd")).ok())
        .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
        .filter(|&n| n <= 4096)
        .sum()
}

/// One test at a time: both fixtures are children of this test process, so one test's big
/// processes are relatives (through this process) of the other's listener, and a walk that
/// runs while both exist reads more than the bound counts on (seen once in a repeat run).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_parent_of_big_processes_does_not_make_the_walk_read_them_all() {
    let _serial = one_at_a_time();
    let Some(fx) = start("worker,activated,unrelated,unrelated") else {
        return;
    };
    let inv = Inventory::collect(&who(fx.port)).expect("collect");
    let small = small_tables_links();
    assert_eq!(inv.sockets.len(), 1, "{:?}", inv.sockets);
    let holders: HashSet<u32> = inv.sockets[0].pids.iter().copied().collect();
    let pid_of = |role: &str| fx.pids_of(role);
    // Every holder found: the parent, its pre-fork worker and its socket-activated child.
    let mut expect: HashSet<u32> = [fx.parent].into();
    expect.extend(pid_of("worker"));
    expect.extend(pid_of("activated"));
    assert_eq!(holders, expect, "holders of port {}", fx.port);
    // The two big children that hold it are read in full (BIG links each); the two that do
    // not are only probed (a few links each). Reading them in full too, as a walk over the
    // parent's every child would, costs 2 * BIG more than this bound allows.
    let bound = small + 2 * (BIG + 64) + BIG;
    assert!(
        inv.walk.fd_links < bound,
        "{:?}: {} links read, bound {bound} (small tables: {small})",
        inv.walk,
        inv.walk.fd_links
    );
    assert!(inv.walk.fd_links >= 2 * BIG, "{:?}", inv.walk);
}

#[test]
fn a_socket_only_a_big_process_holds_is_still_named() {
    let _serial = one_at_a_time();
    // The client end of a connection to the port, held only by a big process (as a bulk
    // client whose ephemeral port is the one asked about): the walk reads big tables until
    // it is found, on every core.
    let Some(fx) = start("unrelated,client,unrelated") else {
        return;
    };
    let inv = Inventory::collect(&who(fx.port)).expect("collect");
    let client = fx.pids_of("client");
    let listener = inv
        .sockets
        .iter()
        .find(|s| s.remote.is_none())
        .expect("the listener");
    assert_eq!(listener.pids, vec![fx.parent], "{:?}", inv.sockets);
    let conn = inv
        .sockets
        .iter()
        .find(|s| s.remote.is_some_and(|r| r.port() == fx.port))
        .expect("the client end");
    assert_eq!(conn.pids, client, "{:?}", inv.sockets);
    // The accepted end is in the listener's backlog, held by no process.
    assert!(inv.walk.fd_links >= BIG, "{:?}", inv.walk);
}

//! `info A-B` reports what this machine says about the range as a whole, from the live
//! sysctls.

use std::process::Command;

fn sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).expect("sysctl readable")
}

fn overlap(a: (u32, u32), b: (u32, u32)) -> u64 {
    let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
    if lo > hi {
        0
    } else {
        u64::from(hi - lo + 1)
    }
}

#[test]
fn range_counts_privileged_and_ephemeral_ports_from_this_machine() {
    let ups: u32 = sysctl("ip_unprivileged_port_start").trim().parse().unwrap();
    let eph: Vec<u32> = sysctl("ip_local_port_range")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    for (lo, hi) in [(1000u32, 1100u32), (30000, 40000), (1, 65535)] {
        let out = Command::new(env!("CARGO_BIN_EXE_portolan"))
            .args(["info", &format!("{lo}-{hi}"), "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &v["results"][0]["range"];
        assert_eq!(r["ports"], u64::from(hi - lo + 1));
        let privileged = if ups == 0 {
            0
        } else {
            overlap((lo, hi), (1, ups - 1))
        };
        assert_eq!(r["privileged_ports"], privileged, "{lo}-{hi}");
        assert_eq!(
            r["ephemeral_ports"],
            overlap((lo, hi), (eph[0], eph[1])),
            "{lo}-{hi}"
        );
    }
}

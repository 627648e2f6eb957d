//! What `/proc` says about a process (CPU time, resident memory) and about UDP sockets (how
//! many datagrams each dropped because its receive buffer was full).

use std::collections::{HashMap, HashSet};

/// Linux reports CPU time in USER_HZ ticks, 100 per second on every architecture it runs on.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU ticks of process `pid` (`None`: this process).
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_cpu_ticks(&std::fs::read_to_string(path).ok()?)
}

/// utime and stime are fields 14 and 15; the name (field 2) may hold spaces, so count from
/// the closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in kB.
pub fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Receive-buffer drops of the IPv4 UDP sockets bound to `ports`, by socket inode (a port can
/// be reused by a later socket; an inode is one socket).
pub fn udp_drops(ports: &HashSet<u16>) -> HashMap<u64, u64> {
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| parse_udp_drops(&t, ports))
        .unwrap_or_default()
}

fn parse_udp_drops(table: &str, ports: &HashSet<u16>) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if f.len() < 13 {
            continue;
        }
        let Some(port) = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if !ports.contains(&port) {
            continue;
        }
        if let (Ok(inode), Ok(drops)) = (f[9].parse::<u64>(), f[12].parse::<u64>()) {
            out.insert(inode, drops);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_name_with_spaces() {
        let stat = "1234 (golive worker) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 30 0 0 20 0 \
                    3 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(280));
    }

    #[test]
    fn udp_drops_by_inode_for_our_ports() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:9C40 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 555 2 0000000000000000 7\n\
            2: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 556 2 0000000000000000 3\n";
        let ports: HashSet<u16> = [0x9c40].into();
        let drops = parse_udp_drops(table, &ports);
        assert_eq!(drops, HashMap::from([(555, 7)]));
    }
}

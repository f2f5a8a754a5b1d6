//! Process and kernel numbers from `/proc`: CPU time, resident memory,
//! socket memory, and the open-file limit.

use std::{collections::HashMap, fs, time::Instant};

use serde::Serialize;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux x86-64).
fn ticks_per_sec() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| getconf("CLK_TCK").unwrap_or(100.0))
}

/// The page size (for `/proc/net/sockstat` pages).
pub fn page_size() -> u64 {
    static PS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PS.get_or_init(|| getconf("PAGESIZE").unwrap_or(4096.0)) as u64
}

fn getconf(name: &str) -> Option<f64> {
    let out = std::process::Command::new("getconf")
        .arg(name)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec())
}

/// CPU seconds of every live `postgres` process, by pid.
fn postgres_cpu() -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
            && let Some(c) = cpu_secs(pid)
        {
            out.insert(pid, c);
        }
    }
    out
}

/// `VmRSS` of a process, in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `/proc/net/sockstat` TCP line: sockets in use and memory pages.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SockStat {
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// TCP sockets in TIME_WAIT.
    pub tcp_tw: u64,
    /// TCP buffer memory, in pages.
    pub tcp_mem_pages: u64,
}

/// Reads `/proc/net/sockstat`.
pub fn sockstat() -> SockStat {
    let mut s = SockStat::default();
    if let Ok(text) = fs::read_to_string("/proc/net/sockstat")
        && let Some(line) = text.lines().find(|l| l.starts_with("TCP:"))
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        for pair in f[1..].chunks(2) {
            if let [k, v] = pair {
                let v = v.parse().unwrap_or(0);
                match *k {
                    "inuse" => s.tcp_inuse = v,
                    "tw" => s.tcp_tw = v,
                    "mem" => s.tcp_mem_pages = v,
                    _ => {}
                }
            }
        }
    }
    s
}

/// Raises this process's RLIMIT_NOFILE (soft and, as root, hard) to at
/// least `want`; children spawned afterwards inherit it. Returns the soft
/// limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap_or((1024, 1024));
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(hard);
    let target = want.min(nr_open);
    if target > hard {
        // Raising the hard limit needs CAP_SYS_RESOURCE (root here).
        if rlimit::setrlimit(Resource::NOFILE, target, target).is_ok() {
            return target;
        }
    }
    let soft_target = target.min(hard).max(soft);
    let _ = rlimit::setrlimit(Resource::NOFILE, soft_target, hard.max(soft_target));
    rlimit::getrlimit(Resource::NOFILE).map_or(soft, |(s, _)| s)
}

/// The soft RLIMIT_NOFILE in force (spawned servers inherit it).
pub fn nofile() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(s, _)| s)
}

/// Why the open-file limit is what it is, for reports.
pub fn nofile_note(want: usize) -> String {
    let cap = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        })
        .is_some_and(|c| c & (1 << 24) != 0);
    format!(
        "reduced from {want}: RLIMIT_NOFILE is {} for this process and the server it spawns, and it cannot be raised \
         (setrlimit of the hard limit fails: CAP_SYS_RESOURCE {}); every connection needs one descriptor in the \
         server and one in the generator",
        nofile(),
        if cap {
            "present but refused"
        } else {
            "is not in this sandbox's capability set"
        }
    )
}

/// CPU use over a window, in percent of one core.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    /// Wall-clock seconds of the window.
    pub wall_secs: f64,
    /// This load generator.
    pub generator_pct: f64,
    /// The DocSpot server process(es), summed.
    pub server_pct: Option<f64>,
    /// PostgreSQL processes alive at both ends of the window, summed.
    pub postgres_pct: f64,
}

/// Start of a CPU measurement window.
pub struct CpuWindow {
    t0: Instant,
    me: f64,
    servers: Vec<(u32, f64)>,
    pg: HashMap<u32, f64>,
}

impl CpuWindow {
    /// Opens a window over this process, the given server pids and PostgreSQL.
    pub fn start(servers: &[u32]) -> Self {
        Self {
            t0: Instant::now(),
            me: cpu_secs(std::process::id()).unwrap_or(0.0),
            servers: servers
                .iter()
                .map(|&p| (p, cpu_secs(p).unwrap_or(0.0)))
                .collect(),
            pg: postgres_cpu(),
        }
    }

    /// Closes the window.
    pub fn finish(&self) -> CpuUse {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-6);
        let me = cpu_secs(std::process::id()).unwrap_or(0.0) - self.me;
        let server = (!self.servers.is_empty()).then(|| {
            self.servers
                .iter()
                .map(|&(p, c)| cpu_secs(p).map_or(0.0, |now| now - c))
                .sum::<f64>()
        });
        let pg_now = postgres_cpu();
        let pg: f64 = pg_now
            .iter()
            .map(|(pid, now)| now - self.pg.get(pid).copied().unwrap_or(0.0))
            .sum();
        CpuUse {
            wall_secs: wall,
            generator_pct: 100.0 * me / wall,
            server_pct: server.map(|s| 100.0 * s / wall),
            postgres_pct: 100.0 * pg / wall,
        }
    }
}

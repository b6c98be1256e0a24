//! What the generator reads about processes from `/proc` (Linux): resident memory, CPU
//! time, load averages and the open-files limit. It never signals a process; the one
//! thing it changes is this process's own open-files limit ([`raise_open_files`]).

use std::io;

/// Which process to read.
#[derive(Debug, Clone, Copy)]
pub enum Proc {
    This,
    Pid(u32),
}

impl Proc {
    fn status_path(self) -> String {
        match self {
            Self::This => "/proc/self/status".into(),
            Self::Pid(pid) => format!("/proc/{pid}/status"),
        }
    }
}

/// `VmRSS` of `proc`, in bytes.
pub fn rss_bytes(proc: Proc) -> io::Result<u64> {
    let status = std::fs::read_to_string(proc.status_path())?;
    parse_kb_field(&status, "VmRSS:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// CPU time (user + system) `proc` has used so far, in seconds. Reads `utime` and
/// `stime` of `/proc/PID/stat`, in clock ticks of 1/100 s (`USER_HZ`, 100 on Linux).
pub fn cpu_secs(proc: Proc) -> io::Result<f64> {
    let path = match proc {
        Proc::This => "/proc/self/stat".to_owned(),
        Proc::Pid(pid) => format!("/proc/{pid}/stat"),
    };
    let stat = std::fs::read_to_string(path)?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / 100.0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable stat line"))
}

/// A CPU-time meter for one process or several (the nodes of a cluster and their Redis):
/// [`CpuMeter::percent`] is the share of one core they used together since
/// [`CpuMeter::start`] (200 = both cores of a 2-core machine).
#[derive(Debug, Clone)]
pub struct CpuMeter {
    procs: Vec<Proc>,
    cpu: f64,
    at: std::time::Instant,
}

impl CpuMeter {
    pub fn start(proc: Proc) -> Option<Self> {
        Self::start_all(vec![proc])
    }

    /// One meter over every process of `pids`; `None` for none, or when one cannot be read.
    pub fn start_pids(pids: &[u32]) -> Option<Self> {
        Self::start_all(pids.iter().map(|&p| Proc::Pid(p)).collect())
    }

    fn start_all(procs: Vec<Proc>) -> Option<Self> {
        if procs.is_empty() {
            return None;
        }
        Some(Self {
            cpu: total_cpu_secs(&procs)?,
            procs,
            at: std::time::Instant::now(),
        })
    }

    /// Wall time since [`CpuMeter::start`], in seconds.
    pub fn elapsed_secs(&self) -> f64 {
        self.at.elapsed().as_secs_f64()
    }

    /// CPU seconds the processes used since [`CpuMeter::start`].
    pub fn used_secs(&self) -> Option<f64> {
        Some(total_cpu_secs(&self.procs)? - self.cpu)
    }

    pub fn percent(&self) -> Option<f64> {
        let used = total_cpu_secs(&self.procs)? - self.cpu;
        let wall = self.at.elapsed().as_secs_f64();
        (wall > 0.0).then(|| 100.0 * used / wall)
    }
}

fn total_cpu_secs(procs: &[Proc]) -> Option<f64> {
    procs.iter().map(|&p| cpu_secs(p).ok()).sum()
}

/// The 1, 5 and 15 minute load averages of the machine.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The soft `Max open files` of this process, if `/proc` says.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

/// Logical CPUs of the machine (online), whatever this process's affinity (`bench/run`
/// with `PIN=1` runs the generator on one of them).
pub fn cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Counts the CPUs of a kernel CPU list such as `0-3,6,8-9`.
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.trim().split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

fn parse_kb_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// `utime + stime` from a `/proc/PID/stat` line; the command name may hold spaces and
/// parentheses, so fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// This process's open-files limits after [`raise_open_files`], and what the machine
/// allows any process (`/proc/sys/fs/file-max`, `/proc/sys/fs/nr_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
    /// Open files the whole machine allows.
    pub file_max: Option<u64>,
    /// The highest hard limit a privileged process may set.
    pub nr_open: Option<u64>,
}

/// Raises this process's soft open-files limit to at least `need`: up to the hard limit
/// as anyone may, and above it (the hard limit too, up to `nr_open`) only when the
/// process has `CAP_SYS_RESOURCE` (root, unless a container dropped it). Never lowers a
/// limit. Returns the limits now in effect, whether or not they reach `need` (the caller
/// decides).
pub fn raise_open_files(need: u64) -> OpenFiles {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let (file_max, nr_open) = (read("/proc/sys/fs/file-max"), read("/proc/sys/fs/nr_open"));
    let now = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let (soft, hard) = (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    );
    if soft < need {
        let privileged = hard < need
            && nr_open.is_none_or(|n| need <= n)
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(need),
                    maximum: Some(need),
                },
            )
            .is_ok();
        if !privileged {
            // EPERM above the hard limit: as far as anyone may go.
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(need.min(hard)),
                    ..now
                },
            );
        }
    }
    let after = getrlimit(Resource::Nofile);
    OpenFiles {
        soft: after.current.unwrap_or(u64::MAX),
        hard: after.maximum.unwrap_or(u64::MAX),
        file_max,
        nr_open,
    }
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }

    #[test]
    fn parses_proc_text() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(parse_kb_field(status, "VmRSS:"), Some(5120));
        let limits = "Limit  Soft Limit  Hard Limit  Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files(limits), Some(1024));
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_bytes(Proc::This).expect("linux /proc") > 0);
        assert!(cpus() >= 1);
        assert!(cpu_secs(Proc::This).expect("linux /proc") >= 0.0);
        assert!(load_average().is_some());
    }

    #[test]
    fn raising_the_open_files_limit_never_lowers_it() {
        let before = raise_open_files(0);
        assert!(before.soft <= before.hard);
        // Asking for less than the soft limit changes nothing.
        assert_eq!(raise_open_files(before.soft.min(16)), before);
        // Asking for the hard limit reaches it, as anyone may.
        let hard = before.hard.min(1 << 20);
        let after = raise_open_files(hard);
        assert!(after.soft >= hard.min(before.hard), "{after:?}");
        assert_eq!(open_files_limit(), Some(after.soft));
    }
}

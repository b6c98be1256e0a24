//! What the generator reads about processes from `/proc` (Linux): resident memory and
//! the open-files limit. Read-only; it never changes a limit or signals a process.

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

/// The soft `Max open files` of this process, if `/proc` says.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

/// Logical CPUs available to this process.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn parse_kb_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
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
    fn parses_proc_text() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(parse_kb_field(status, "VmRSS:"), Some(5120));
        let limits = "Limit  Soft Limit  Hard Limit  Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_bytes(Proc::This).expect("linux /proc") > 0);
        assert!(cpus() >= 1);
    }
}

//! The process metrics every Prometheus client exports under the same names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read from `/proc`
//! at scrape time only: nothing is kept or sampled between scrapes.
//!
//! Read by hand rather than through a crate: five files and a dozen fields, while the
//! crates that parse all of `/proc` bring a dependency tree, and the one that exports these
//! speaks the `metrics` facade, whose counters cannot hold the fractional seconds of
//! `process_cpu_seconds_total`.

use std::fmt::Write;

use super::defs::DEFS;
use crate::sys;

/// One reading of the process's figures; a figure `/proc` did not give is left out.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl Process {
    /// Reads this process's figures now.
    pub fn read() -> Process {
        let proc = |file: &str| std::fs::read_to_string(format!("/proc/self/{file}")).ok();
        let ticks = sys::clock_ticks_per_second() as f64;
        let stat = proc("stat").and_then(|s| Stat::parse(&s));
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        Process {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / ticks),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / ticks),
            resident_bytes: proc("status").and_then(|s| resident_bytes(&s)),
            virtual_bytes: stat.map(|s| s.vsize),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: proc("limits").and_then(|s| max_open_files(&s)),
        }
    }

    /// Appends the exposition of every figure read.
    pub fn write(&self, out: &mut String) {
        let families: [(&str, Option<f64>); 6] = [
            ("process_cpu_seconds_total", self.cpu_seconds),
            ("process_start_time_seconds", self.start_time_seconds),
            (
                "process_resident_memory_bytes",
                self.resident_bytes.map(|b| b as f64),
            ),
            (
                "process_virtual_memory_bytes",
                self.virtual_bytes.map(|b| b as f64),
            ),
            ("process_open_fds", self.open_fds.map(|n| n as f64)),
            ("process_max_fds", self.max_fds.map(|n| n as f64)),
        ];
        for (name, value) in families {
            let Some(value) = value else { continue };
            let Some(def) = DEFS.iter().find(|d| d.name == name) else {
                continue;
            };
            let ty = match def.kind {
                super::MetricKind::Counter => "counter",
                _ => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", def.help);
            let _ = writeln!(out, "# TYPE {name} {ty}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
}

impl Stat {
    fn parse(text: &str) -> Option<Stat> {
        // The command name (field 2) is in parentheses and may hold spaces or parentheses:
        // the fields after it start after the last `)`, with field 3 (state) first.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// `btime` of `/proc/stat`: the boot time, seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes(text: &str) -> Option<u64> {
    let kib = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = kib.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_whitespace()
        .next()?;
    // "unlimited" is no number of files: leave the figure out.
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_field_by_field() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 50 0 0 20 0 8 0 4200 123456789 2048 18446744073709551615";
        let s = Stat::parse(stat);
        assert_eq!(
            s,
            Some(Stat {
                utime: 250,
                stime: 50,
                starttime: 4200,
                vsize: 123456789
            })
        );
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1700000000)
        );
        assert_eq!(
            resident_bytes("Name:\tnodedns\nVmRSS:\t   10240 kB\n"),
            Some(10 << 20)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
    }

    #[test]
    fn this_process_reads_as_a_live_process() {
        let p = Process::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1 << 20), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(
            p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap_or(0)),
            "{p:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let started = p.start_time_seconds.unwrap_or(0.0);
        assert!(
            started > now - 86_400.0 * 365.0 && started <= now + 1.0,
            "{p:?}"
        );
        assert!(p.cpu_seconds.is_some(), "{p:?}");
        let mut out = String::new();
        p.write(&mut out);
        assert!(
            out.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{out}"
        );
        assert!(out.contains("\nprocess_open_fds "), "{out}");
    }
}

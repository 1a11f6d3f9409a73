//! The standard `process_*` metrics (CPU time, memory, file descriptors, threads, start
//! time), read from `/proc/self` at each scrape under the names every Prometheus client
//! library uses, so existing dashboards and alerts work unchanged.
//!
//! Linux only: elsewhere, or when `/proc` cannot be read, the collector exports nothing
//! rather than made-up values.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` when `/metrics` is scraped.
#[derive(Debug)]
pub struct ProcessCollector {
    ticks_per_second: f64,
    page_size: u64,
    /// Seconds since the epoch; constant for the process, so read once.
    start_time: Option<f64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    pub fn new() -> Self {
        let ticks_per_second = rustix::param::clock_ticks_per_second() as f64;
        let start_time = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let started_ticks = StatFields::parse(&stat)?.get(22)?;
                Some(boot_time()? + started_ticks as f64 / ticks_per_second)
            });
        Self {
            ticks_per_second,
            page_size: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
            start_time,
        }
    }

    fn sample(&self) -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields = StatFields::parse(&stat)?;
        let cpu_ticks = fields.get(14)?.saturating_add(fields.get(15)?);
        Some(Sample {
            cpu_seconds: cpu_ticks as f64 / self.ticks_per_second,
            resident_bytes: fields.get(24)?.saturating_mul(self.page_size),
            virtual_bytes: fields.get(23)?,
            threads: fields.get(20)?,
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: max_open_files(),
        })
    }
}

struct Sample {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// The fields of `/proc/self/stat` after the command name, which may itself hold
/// spaces and parentheses (hence the split at the last `)`).
struct StatFields<'a>(Vec<&'a str>);

impl<'a> StatFields<'a> {
    fn parse(stat: &'a str) -> Option<Self> {
        let (_, after_command) = stat.rsplit_once(')')?;
        Some(Self(after_command.split_whitespace().collect()))
    }

    /// Field `number` as `proc(5)` numbers them (1 is the pid, 3 the state).
    fn get(&self, number: usize) -> Option<u64> {
        self.0.get(number.checked_sub(3)?)?.parse().ok()
    }
}

/// The boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|seconds| seconds as f64)
}

/// The soft limit on open files; `None` when unlimited or unreadable.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn gauge(value: u64) -> ConstGauge<f64> {
    ConstGauge::new(value as f64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(sample) = self.sample() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauges = vec![
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                gauge(sample.resident_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                gauge(sample.virtual_bytes),
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                gauge(sample.threads),
            ),
        ];
        if let Some(open) = sample.open_fds {
            gauges.push((
                "process_open_fds",
                "Number of open file descriptors",
                gauge(open),
            ));
        }
        if let Some(max) = sample.max_fds {
            gauges.push((
                "process_max_fds",
                "Maximum number of open file descriptors",
                gauge(max),
            ));
        }
        if let Some(start) = self.start_time {
            gauges.push((
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                ConstGauge::new(start),
            ));
        }
        for (name, help, value) in gauges {
            value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_numbered_as_proc_numbers_them_whatever_the_command_name() {
        let stat = "4242 (web (x) push) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let fields = StatFields::parse(stat).unwrap();
        assert_eq!(fields.get(14), Some(250), "utime");
        assert_eq!(fields.get(15), Some(50), "stime");
        assert_eq!(fields.get(20), Some(7), "num_threads");
        assert_eq!(fields.get(22), Some(12345), "starttime");
        assert_eq!(fields.get(23), Some(104_857_600), "vsize");
        assert_eq!(fields.get(24), Some(2560), "rss");
        assert_eq!(fields.get(2), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let collector = ProcessCollector::new();
        let sample = collector.sample().expect("/proc/self is readable on Linux");
        assert!(sample.resident_bytes > 0);
        assert!(sample.threads >= 1);
        assert!(
            sample.open_fds.unwrap_or(0) >= 3,
            "stdin, stdout, stderr at least"
        );
        let started = collector.start_time.expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 24.0 * 3600.0,
            "{started} vs {now}"
        );
    }
}

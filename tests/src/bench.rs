//! Support for the benchmarks in `tests/benches`: run only under `cargo bench`, build the
//! server and plugins in release first, feed a live point with the paced sample, attach many
//! lean MPEG-TS readers, and report figures (milliseconds, nearest-rank percentiles) and the
//! problems that make a run not count.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::paced::{bytes_per_tick, PacedEncoder};
use crate::ts::TsReader;
use crate::{sample_ts, standard_points, wait_until, workspace, Ferrocast};

/// Whether the benchmark `name` was asked for. `cargo test --all-targets` runs benches
/// without `--bench`: then this says how to run it and the benchmark only checks it builds.
pub fn requested(name: &str) -> bool {
    let requested = std::env::args().any(|arg| arg == "--bench");
    if !requested {
        println!("{name}: run with `cargo bench -p ferrocast-tests --bench {name}`");
    }
    requested
}

/// The number of runs: `variable` if it holds a number from 1 to `max`, else `default`.
pub fn runs(variable: &str, default: usize, max: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| (1..=max).contains(&n))
        .unwrap_or(default)
}

/// `cargo bench` runs a benchmark from target/release, and the support library looks for the
/// server and plugins next to the running executable: build them in release first, so a
/// benchmark never measures a stale (or a debug) server.
pub fn build_release_server() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    // What cargo tells the running benchmark about its own package is not for the build: a
    // build script that tracks one of these (ring's tracks CARGO_MANIFEST_DIR) would be
    // rebuilt here and again by the next `cargo bench`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let about_the_package = name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
            ]
            .contains(&name.as_ref());
        if about_the_package {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .args(["build", "--release", "--workspace", "--quiet"])
        .current_dir(workspace())
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release --workspace failed");
}

/// Make sure this process may open `needed` files (sockets here and, inherited, in the
/// server). If the soft limit is lower, run the benchmark again under `sh` with the soft limit
/// raised to `wanted` (or the hard limit, if lower); `marker` is the environment variable that
/// tells the second run it is one.
pub fn ensure_fd_limit(name: &str, needed: usize, wanted: u32, marker: &str) {
    let soft = Command::new("sh")
        .args(["-c", "ulimit -Sn"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let enough = soft == "unlimited" || soft.parse::<usize>().is_ok_and(|n| n >= needed);
    if enough {
        return;
    }
    assert!(
        std::env::var_os(marker).is_none(),
        "the open files limit is {soft} and cannot be raised; raise the hard limit (ulimit -Hn)"
    );
    println!("{name}: open files limit {soft}; running again with a higher one");
    let script = format!(
        "hard=$(ulimit -Hn); if [ \"$hard\" = unlimited ] || [ \"$hard\" -ge {wanted} ]; then ulimit -Sn {wanted}; else ulimit -Sn \"$hard\"; fi; exec \"$0\" \"$@\""
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::env::current_exe().expect("benchmark executable"))
        .args(std::env::args_os().skip(1))
        .env(marker, "1")
        .status()
        .expect("run the benchmark again under sh");
    std::process::exit(status.code().unwrap_or(1));
}

/// The standard points, the live one with a grace so long that no run ends it (the default
/// source timeout never fires either: the paced encoder writes every 40 ms).
pub fn long_grace_points() -> String {
    standard_points().replace(
        "source = \"push\"\n",
        "source = \"push\"\nreconnect_grace_ms = 600000\n",
    )
}

/// The shipped sample, ready to be pushed in real time by [`PacedEncoder`]s.
pub struct Feed {
    sample: Arc<[u8]>,
    /// Bytes written every tick: 1/25 s of the sample.
    pub per_tick: usize,
}

impl Feed {
    pub fn load() -> Self {
        let sample: Arc<[u8]> = std::fs::read(sample_ts()).expect("read sample").into();
        let per_tick = bytes_per_tick(&sample);
        Self { sample, per_tick }
    }

    /// A new encoder pushing the sample to `PUT /live` on `server`.
    pub fn start(&self, server: std::net::SocketAddr) -> PacedEncoder {
        PacedEncoder::start(server, Arc::clone(&self.sample), self.per_tick)
    }
}

/// Poll until `ready` holds for every reader, at most `timeout`; whether it did.
pub fn wait_for_all(
    readers: &[TsReader],
    timeout: Duration,
    ready: impl Fn(&TsReader) -> bool,
) -> bool {
    wait_until(timeout, || readers.iter().all(&ready))
}

pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
pub fn percentile(values: &[Duration], p: usize) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let rank = (values.len() * p).div_ceil(100).max(1);
    Some(values[rank - 1])
}

/// The median of `values` (sorted here) in milliseconds, `-` if there are none.
pub fn median_text(values: &mut [Duration]) -> String {
    values.sort();
    percentile(values, 50).map_or("-".into(), ms)
}

pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// What makes a benchmark's figures not count.
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// A client skipped ahead (or dropped) for lagging would not measure what a benchmark
    /// means to measure.
    pub fn check_no_lagging(&mut self, server: &Ferrocast) {
        let lagging = server.logs().matches("CLIENT_LAGGING").count();
        if lagging > 0 {
            self.push(format!("CLIENT_LAGGING logged {lagging} times"));
        }
    }

    pub fn print(&self) {
        for problem in &self.0 {
            println!("problem: {problem}");
        }
    }

    /// With any problem: print the server's log and exit non-zero.
    pub fn exit_if_any(&self, server: &Ferrocast) {
        if !self.0.is_empty() {
            eprintln!("server log:\n{}", server.logs());
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values = ms_list(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&values, 50), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&values, 90), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&values, 99), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&values, 0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_median_text_sorts_first_and_says_when_there_is_nothing() {
        assert_eq!(median_text(&mut ms_list(&[30, 10, 20])), "20.0 ms");
        assert_eq!(median_text(&mut []), "-");
    }
}

//! Parsers of the numbers the subcommands take (clap `value_parser`s), shared so that
//! a flag two subcommands have means the same range in both, and every value out of
//! range is a usage error naming the flag and the range, never a panic or a silent
//! default.

use std::time::Duration;

use dataplane::flow::FlowTable;

/// Largest flow-log `--interval` (s) of `run` and `replay`: a day.
pub const MAX_INTERVAL_SECS: u64 = 86_400;

/// `--interval` of `run` and `replay`: whole seconds from 1 to [`MAX_INTERVAL_SECS`].
pub fn interval() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=MAX_INTERVAL_SECS)
}

/// A nice value from -20 to 19, or `off` (`None`: the thread's own priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NiceArg(pub Option<i32>);

/// `--change-nice` of `run`: a nice value from -20 to 19, or `off`.
pub fn change_nice(s: &str) -> Result<NiceArg, String> {
    if s == "off" {
        return Ok(NiceArg(None));
    }
    match s.parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(NiceArg(Some(n))),
        _ => Err("expected a nice value from -20 to 19, or off".into()),
    }
}

/// Largest `--flow-capacity` of `run` and `replay` (connections per worker): 2 GiB of
/// flow table, well within the table's `u32` slot numbers.
pub const MAX_FLOW_CAPACITY: usize = 1 << 24;

/// `--flow-capacity` of `run` and `replay`: connections per worker from 1 to
/// [`MAX_FLOW_CAPACITY`].
pub fn flow_capacity(s: &str) -> Result<usize, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX_FLOW_CAPACITY as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "expected a number of connections per worker from 1 to {MAX_FLOW_CAPACITY}"
        )),
    }
}

/// Refuses flow tables that together (`workers` of `capacity` connections each) need
/// more memory than the machine has available: they are allocated and written before
/// a run starts.
pub fn check_flow_memory(workers: usize, capacity: usize) -> Result<(), String> {
    let per = FlowTable::memory_for(capacity).unwrap_or(usize::MAX);
    let total = per.saturating_mul(workers);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    if let Some(avail) = crate::sys::available_memory()
        && total as u64 > avail
    {
        return Err(format!(
            "--flow-capacity {capacity} with --workers {workers}: the flow tables need {:.1} GiB ({workers} x {capacity} connections x {} B), more than the {:.1} GiB of memory available; lower --flow-capacity or --workers",
            gib(total as u64),
            per / capacity.max(1),
            gib(avail)
        ));
    }
    Ok(())
}

/// Largest `run --duration` (s): ten years. Anything longer is what running without
/// `--duration` does.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;

/// `run --duration`: seconds (fractions allowed) from 0 to [`MAX_DURATION_SECS`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let range = || format!("expected a number of seconds from 0 to {MAX_DURATION_SECS}");
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=MAX_DURATION_SECS as f64).contains(&v) => {
            Duration::try_from_secs_f64(v).map_err(|_| range())
        }
        _ => Err(range()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_out_of_range_are_errors_not_panics() {
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            duration(&MAX_DURATION_SECS.to_string()),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
        for bad in [
            "1e20",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "-1",
            "-0.5",
            "",
            "x",
            "315360001",
        ] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("from 0 to 315360000"), "{bad}: {e}");
        }
    }
}

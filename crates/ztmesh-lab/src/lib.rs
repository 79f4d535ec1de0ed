//! A real local mesh on loopback: `ztmesh demo`, `ztmesh bench ...` and the local test mesh.
//!
//! This crate owns the demonstration and the benchmarks of the `ztmesh` command line, and the
//! [`local_mesh`] they share: a CA, witnesses and node processes started from the running
//! `ztmesh` executable (`std::env::current_exe`), in temporary directories, listening on
//! 127.0.0.1 only. It must never be used by a production node, CA or witness, never listen
//! beyond loopback, never touch a data directory it did not create, and never leave a child
//! process behind: every child is killed when the run ends, also on an error.
//!
//! - [`demo`]: `ztmesh demo`, enrollment to rotation and revocation on N nodes;
//! - [`bench`]: `ztmesh bench handshake`, the mutual-TLS verifier against plain rustls;
//! - [`bench_core`]: `ztmesh bench gossip` and `bench dtn`, the sans-IO cores in process;
//! - [`bench_mesh`]: `ztmesh bench mesh`, latencies over real node processes;
//! - [`bench_tlog`]: `ztmesh bench tlog`, the membership log and its witnesses;
//! - [`bench_attest`]: `ztmesh bench attest`, every evidence verifier against its raw signatures.
//!
//! Every benchmark prints a ratio against a baseline measured in the same run. The functions
//! take options whose bounds and defaults the command line gives; they print their results to
//! stdout and are meant to be called from the `ztmesh` binary, whose executable they spawn.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Prints a line to stdout, as every `ztmesh` command does: a closed pipe
/// (`ztmesh bench mesh | head`) ends the process quietly with success instead of panicking.
macro_rules! out {
    () => { $crate::emit(String::new()) };
    ($($arg:tt)*) => { $crate::emit(format!($($arg)*)) };
}

pub mod bench;
pub mod bench_attest;
pub mod bench_core;
pub mod bench_mesh;
pub mod bench_tlog;
pub mod demo;
pub mod local_mesh;

/// The `ztmesh` binary's stdout rule (its own `emit`), kept here because these commands print
/// their results themselves: a broken pipe exits 0, any other write error exits 1.
fn emit(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {error}");
        std::process::exit(1);
    }
}

/// Refuses an option outside the bounds the command line gives it, so that another caller gets
/// an error rather than a division by zero or an oversized run deep inside a benchmark.
fn check_bounds<T>(name: &str, value: T, bounds: std::ops::RangeInclusive<T>) -> anyhow::Result<()>
where
    T: PartialOrd + std::fmt::Display,
{
    anyhow::ensure!(
        bounds.contains(&value),
        "{name} = {value} is outside {}..={}",
        bounds.start(),
        bounds.end()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_outside_the_command_line_bounds_are_refused() {
        assert!(super::check_bounds("rounds", 1u32, 1..=50).is_ok());
        assert!(super::check_bounds("rounds", 50u32, 1..=50).is_ok());
        let error = super::check_bounds("rounds", 0u32, 1..=50).unwrap_err();
        assert_eq!(error.to_string(), "rounds = 0 is outside 1..=50");
        assert!(super::check_bounds("seconds", f64::NAN, 0.001..=600.0).is_err());
    }
}

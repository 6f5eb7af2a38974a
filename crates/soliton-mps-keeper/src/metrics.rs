//! The node_exporter textfile of one keeper,
//! `<metrics_dir>/soliton-mps-keeper-<uuid>.prom`.
//!
//! The file is replaced atomically (temp file in the same folder, write, fsync,
//! rename, fsync the folder), so node_exporter never reads half a file. It is
//! written after every kernel and once more when the keeper fails, with
//! `soliton_mps_keeper_up 0` and the exit code; a keeper killed by the watchdog
//! cannot write, which shows as a stale `last_success_timestamp_seconds`.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend::{GpuSample, ResolvedGpu};

/// What the keeper knows at the time of writing.
#[derive(Debug, Clone, Default)]
pub struct KeeperState {
    /// Whether the last kernel completed in time.
    pub up: bool,
    /// Latency of the last completed kernel, seconds.
    pub last_latency_seconds: Option<f64>,
    /// Kernels completed by this process.
    pub kernels_total: u64,
    /// Unix time of the last completed kernel.
    pub last_success_unix: Option<f64>,
    /// The exit code, once the keeper is failing.
    pub exit_code: Option<u8>,
}

/// Path of the metrics file for `uuid`.
pub fn metrics_path(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(format!("soliton-mps-keeper-{uuid}.prom"))
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the file's text.
pub fn render(gpu: &ResolvedGpu, state: &KeeperState, sample: &GpuSample) -> String {
    let labels = format!("gpu=\"{}\"", escape_label(gpu.uuid.as_str()));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            // Writing into a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}\n"
            );
        }
    };
    gauge(
        "soliton_mps_keeper_up",
        "1 while the last keep-alive kernel completed within its deadline.",
        Some(if state.up { 1.0 } else { 0.0 }),
    );
    gauge(
        "soliton_mps_keeper_kernel_latency_seconds",
        "Launch-to-completion time of the last keep-alive kernel.",
        state.last_latency_seconds,
    );
    gauge(
        "soliton_mps_keeper_kernels_completed",
        "Keep-alive kernels completed by this keeper process.",
        Some(state.kernels_total as f64),
    );
    gauge(
        "soliton_mps_keeper_last_success_timestamp_seconds",
        "Unix time of the last completed keep-alive kernel.",
        state.last_success_unix,
    );
    gauge(
        "soliton_mps_keeper_exit_code",
        "Exit code of a keeper that failed; absent while it runs.",
        state.exit_code.map(f64::from),
    );
    gauge(
        "soliton_mps_gpu_utilization_ratio",
        "GPU utilisation (NVML), 0 to 1.",
        sample.utilization,
    );
    gauge(
        "soliton_mps_gpu_memory_used_bytes",
        "GPU memory in use (NVML).",
        sample.memory_used.map(|v| v as f64),
    );
    gauge(
        "soliton_mps_gpu_memory_total_bytes",
        "GPU memory size (NVML).",
        sample.memory_total.map(|v| v as f64),
    );
    gauge(
        "soliton_mps_gpu_temperature_celsius",
        "GPU core temperature (NVML).",
        sample.temperature_celsius.map(f64::from),
    );
    gauge(
        "soliton_mps_gpu_power_watts",
        "Board power draw (NVML).",
        sample.power_watts,
    );
    let _ = write!(
        out,
        "# HELP soliton_mps_keeper_info Device the keeper keeps warm.\n\
         # TYPE soliton_mps_keeper_info gauge\n\
         soliton_mps_keeper_info{{{labels},index=\"{}\",name=\"{}\"}} 1\n",
        gpu.index,
        escape_label(&gpu.name)
    );
    out
}

/// Replaces `path` with `text` atomically.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Not ending in `.prom`, so node_exporter ignores it while it is partial.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));

    let result = (|| {
        // Step 1: a crash here leaves at most a stray temp file, never a
        // partial .prom file.
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        // Step 2: after the rename the new file is complete under its name;
        // the folder fsync makes the rename survive a power cut.
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Cleanup only; the original error is what the caller needs.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_id::GpuUuid;

    fn gpu() -> ResolvedGpu {
        ResolvedGpu {
            uuid: GpuUuid::parse("GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11").unwrap(),
            index: 3,
            name: "NVIDIA \"H200\"".into(),
            mig: None,
        }
    }

    #[test]
    fn renders_only_known_values_with_escaped_labels() {
        let text = render(
            &gpu(),
            &KeeperState {
                up: true,
                last_latency_seconds: Some(0.000_25),
                kernels_total: 7,
                ..KeeperState::default()
            },
            &GpuSample {
                temperature_celsius: Some(40),
                ..GpuSample::default()
            },
        );
        assert!(text.contains(
            "soliton_mps_keeper_up{gpu=\"GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11\"} 1\n"
        ));
        assert!(text.contains("soliton_mps_keeper_kernel_latency_seconds{"));
        assert!(text.contains("soliton_mps_gpu_temperature_celsius{"));
        assert!(!text.contains("soliton_mps_gpu_power_watts"));
        assert!(!text.contains("exit_code"));
        assert!(text.contains("index=\"3\",name=\"NVIDIA \\\"H200\\\"\"} 1"));
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = metrics_path(dir.path(), "GPU-x");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let err = write_atomically(&dir.path().join("no/such/dir.prom"), "x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}

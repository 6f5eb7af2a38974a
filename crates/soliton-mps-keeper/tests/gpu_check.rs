//! A dry run of scripts/gpu-check on a host without a GPU: the test build of
//! the keeper (simulated GPU backend) and a test-only stand-in for
//! nvidia-cuda-mps-control. It proves the script's own logic (device list,
//! MPS daemon start and stop, notify parsing, fault and recovery, the summary
//! table, cleanup) so that the scarce time on a GPU host is not spent on
//! script bugs. The GPU itself is only exercised on a GPU host.

use std::path::Path;
use std::process::Command;

#[test]
fn gpu_check_script_passes_against_the_simulated_gpu() {
    let bin = env!("CARGO_BIN_EXE_soliton-mps-keeper");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let fake_bin = dir.path().join("bin");
    std::fs::create_dir(&fake_bin).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-nvidia-cuda-mps-control"),
        fake_bin.join("nvidia-cuda-mps-control"),
    )
    .unwrap();
    let sim = dir.path().join("sim");
    std::fs::create_dir(&sim).unwrap();
    std::fs::write(
        sim.join("gpus"),
        "gpu GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11 0 Test-only GPU\n\
         gpu GPU-11111111-2222-3333-4444-555555555555 1 Test-only Second GPU\n\
         mig MIG-0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011 GPU-11111111-2222-3333-4444-555555555555 \
         1 0 Test-only MIG\n",
    )
    .unwrap();

    let path = format!("{}:/usr/bin:/bin", fake_bin.display());
    let out = Command::new(repo.join("scripts/gpu-check"))
        .args(["--bin", bin, "--interval", "300"])
        .env("PATH", path)
        .env("SOLITON_MPS_KEEPER_SIMULATED_GPU", &sim)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("GPU-") || l.starts_with("MIG-"))
        .collect();
    // The GPU, and the MIG device in place of its parent GPU.
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("GPU-8ca2c6c4"), "{stdout}");
    assert!(rows[1].starts_with("MIG-0f1e2d3c") && rows[1].contains("old MIG name maps"));
    for row in rows {
        assert!(row.ends_with("PASS"), "{row}");
        assert!(row.contains("exit 10 in"), "{row}");
    }
    // Its MPS stand-ins were stopped and its work folder removed.
    let work = stderr
        .lines()
        .find_map(|l| l.split("work folder ").nth(1))
        .expect("work folder named");
    assert!(!Path::new(work.trim()).exists(), "{work} left behind");
}

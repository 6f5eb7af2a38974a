//! The keeper's side of the MPS control daemon: its pipe folder must exist and
//! hold the daemon's `control` socket before the keeper creates a context, and
//! the configured default active-thread percentage is set and read back through
//! `nvidia-cuda-mps-control`.
//!
//! Without a reachable pipe folder CUDA would not fail: it would quietly run
//! the keeper without MPS (or against another pipe folder), which would keep
//! nothing warm for the services. So the keeper checks first and refuses.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why the MPS pipe folder is not usable.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// The folder does not exist (the control unit is not running?).
    #[error(
        "MPS pipe folder {path} does not exist after waiting {waited:?} \
         (is soliton-mps-control@{uuid}.service running?)"
    )]
    Missing {
        path: PathBuf,
        uuid: String,
        waited: Duration,
    },
    /// The folder exists but cannot be used.
    #[error("MPS pipe folder {path} is unreachable: {cause}")]
    Unreachable { path: PathBuf, cause: String },
    /// The folder exists but holds no control socket.
    #[error(
        "MPS pipe folder {path} has no control socket after waiting {waited:?} \
         (the MPS control daemon is not running there)"
    )]
    NoControlSocket { path: PathBuf, waited: Duration },
}

/// Waits up to `wait` for `pipe/control` to be a socket. A folder that exists
/// but cannot be entered fails at once: waiting will not fix permissions.
pub fn wait_for_control_socket(pipe: &Path, uuid: &str, wait: Duration) -> Result<(), PipeError> {
    let start = Instant::now();
    loop {
        match check_pipe(pipe) {
            Ok(true) => return Ok(()),
            Ok(false) if start.elapsed() >= wait => {
                return Err(PipeError::NoControlSocket {
                    path: pipe.to_owned(),
                    waited: wait,
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if start.elapsed() >= wait {
                    return Err(PipeError::Missing {
                        path: pipe.to_owned(),
                        uuid: uuid.to_owned(),
                        waited: wait,
                    });
                }
            }
            Err(e) => {
                return Err(PipeError::Unreachable {
                    path: pipe.to_owned(),
                    cause: e.to_string(),
                });
            }
            Ok(false) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `Ok(true)`: the control socket is there; `Ok(false)`: the folder is usable
/// but the socket is not there yet.
fn check_pipe(pipe: &Path) -> std::io::Result<bool> {
    let meta = std::fs::metadata(pipe)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    // Listing the folder proves we may enter and read it, which CUDA needs.
    std::fs::read_dir(pipe)?;
    match std::fs::symlink_metadata(pipe.join("control")) {
        Ok(m) if m.file_type().is_socket() => Ok(true),
        Ok(_) => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "control exists but is not a socket",
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the active-thread percentage could not be set.
#[derive(Debug, thiserror::Error)]
pub enum ActiveThreadError {
    /// The control program did not run or failed.
    #[error("{program} {command:?} (pipe {pipe}): {cause}")]
    Control {
        program: PathBuf,
        command: String,
        pipe: PathBuf,
        cause: String,
    },
    /// The value read back differs from the one set.
    #[error(
        "MPS default active thread percentage reads back {got:?} after setting {want} (pipe {pipe})"
    )]
    Mismatch {
        want: u8,
        got: String,
        pipe: PathBuf,
    },
}

/// Sets the MPS default active-thread percentage and reads it back.
pub fn apply_active_thread_percentage(
    program: &Path,
    pipe: &Path,
    percentage: u8,
) -> Result<(), ActiveThreadError> {
    control(
        program,
        pipe,
        &format!("set_default_active_thread_percentage {percentage}"),
    )?;
    let got = control(program, pipe, "get_default_active_thread_percentage")?;
    let value = got.trim();
    match value.parse::<f64>() {
        Ok(v) if (v - f64::from(percentage)).abs() < 0.01 => Ok(()),
        _ => Err(ActiveThreadError::Mismatch {
            want: percentage,
            got: value.to_owned(),
            pipe: pipe.to_owned(),
        }),
    }
}

/// Runs one `nvidia-cuda-mps-control` command (it reads commands on stdin)
/// with a time limit, and returns its output.
fn control(program: &Path, pipe: &Path, command: &str) -> Result<String, ActiveThreadError> {
    let fail = |cause: String| ActiveThreadError::Control {
        program: program.to_owned(),
        command: command.to_owned(),
        pipe: pipe.to_owned(),
        cause,
    };
    let mut child = Command::new(program)
        .env("CUDA_MPS_PIPE_DIRECTORY", pipe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| fail(format!("write command: {e}")))?;
    }

    let limit = Duration::from_secs(10);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                // Our own child: kill it by handle and reap it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no answer within {limit:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(fail(format!("{status}: {}", err.trim())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn accepts_a_pipe_folder_with_a_control_socket() {
        let dir = tempfile::tempdir().unwrap();
        let _l = UnixListener::bind(dir.path().join("control")).unwrap();
        wait_for_control_socket(dir.path(), "GPU-x", Duration::ZERO).unwrap();
    }

    #[test]
    fn reports_missing_folder_and_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = wait_for_control_socket(&missing, "GPU-x", Duration::from_millis(150))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not exist") && err.contains("nope"),
            "{err}"
        );
        let err = wait_for_control_socket(dir.path(), "GPU-x", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no control socket"), "{err}");
        std::fs::write(dir.path().join("control"), "").unwrap();
        let err = wait_for_control_socket(dir.path(), "GPU-x", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a socket"), "{err}");
    }

    fn fake_control(dir: &Path, get_answer: &str) -> PathBuf {
        // A stand-in for nvidia-cuda-mps-control that answers like it does:
        // `set_…` prints nothing, `get_…` prints the value.
        let path = dir.join("fake-mps-control");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nread cmd\necho \"$cmd $CUDA_MPS_PIPE_DIRECTORY\" >> \"{}/log\"\n\
                 case \"$cmd\" in get_*) echo {get_answer};; esac\n",
                dir.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn sets_and_reads_back_active_thread_percentage() {
        let dir = tempfile::tempdir().unwrap();
        let prog = fake_control(dir.path(), "50.0");
        apply_active_thread_percentage(&prog, Path::new("/run/x/pipe"), 50).unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(
            log.contains("set_default_active_thread_percentage 50 /run/x/pipe"),
            "{log}"
        );

        let err = apply_active_thread_percentage(&prog, Path::new("/p"), 40)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reads back \"50.0\" after setting 40"),
            "{err}"
        );

        let err = apply_active_thread_percentage(&dir.path().join("missing"), Path::new("/p"), 40)
            .unwrap_err()
            .to_string();
        assert!(err.contains("start"), "{err}");
    }
}

//! `rayrepl kernel install`: the kernelspec that makes Jupyter offer rayrepl.
//!
//! Jupyter finds kernels as `kernels/<name>/kernel.json` under its data
//! directories. The spec runs this very binary (by absolute path, so it works
//! outside a shell with `cargo`'s PATH) with `kernel run`, asks for interrupts as
//! messages (so an interrupt cancels tasks instead of signalling the process),
//! and carries the logos JupyterLab shows in its launcher.

use crate::KernelError;
use std::path::{Path, PathBuf};

/// The kernel's name in `jupyter kernelspec list`.
pub const KERNEL_NAME: &str = "rayrepl";
/// What notebooks show as the kernel.
pub const DISPLAY_NAME: &str = "Rust (rayrepl)";

const LOGO_32: &[u8] = include_bytes!("../assets/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../assets/logo-64x64.png");
const LOGO_SVG: &[u8] = include_bytes!("../assets/logo-svg.svg");

/// Where to install, as `jupyter kernelspec install` and ipykernel name them.
#[derive(Debug, Clone)]
pub enum Location {
    /// The user's Jupyter data directory (`jupyter --data-dir`; `JUPYTER_DATA_DIR`).
    User,
    /// The active Python environment's prefix: `$VIRTUAL_ENV`, `$CONDA_PREFIX`,
    /// or `sys.prefix` of `python3`.
    SysPrefix,
    /// `PREFIX/share/jupyter/kernels`.
    Prefix(PathBuf),
}

/// Writes the kernelspec for `binary` and returns its directory.
pub fn install(location: &Location, binary: &Path) -> Result<PathBuf, KernelError> {
    let kernels = kernels_dir(location)?;
    let dir = kernels.join(KERNEL_NAME);
    let fail = |e: std::io::Error| KernelError::Install { path: dir.clone(), detail: e.to_string() };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    std::fs::write(dir.join("kernel.json"), kernel_json(binary)).map_err(fail)?;
    std::fs::write(dir.join("logo-32x32.png"), LOGO_32).map_err(fail)?;
    std::fs::write(dir.join("logo-64x64.png"), LOGO_64).map_err(fail)?;
    std::fs::write(dir.join("logo-svg.svg"), LOGO_SVG).map_err(fail)?;
    Ok(dir)
}

fn kernel_json(binary: &Path) -> String {
    let spec = serde_json::json!({
        "argv": [binary.display().to_string(), "kernel", "run", "--connection-file", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": { "debugger": false },
    });
    serde_json::to_string_pretty(&spec).unwrap_or_default()
}

fn kernels_dir(location: &Location) -> Result<PathBuf, KernelError> {
    let prefix = match location {
        Location::User => {
            // Jupyter's own override comes first, as `jupyter --data-dir` honours it.
            if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
                return Ok(PathBuf::from(dir).join("kernels"));
            }
            let data = jupyter_zmq_client::dirs::user_data_dir().map_err(|e| KernelError::Install {
                path: PathBuf::from("~"),
                detail: format!("cannot find the Jupyter data directory: {e}"),
            })?;
            return Ok(data.join("kernels"));
        }
        Location::SysPrefix => python_prefix()?,
        Location::Prefix(prefix) => prefix.clone(),
    };
    Ok(prefix.join("share").join("jupyter").join("kernels"))
}

fn python_prefix() -> Result<PathBuf, KernelError> {
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(prefix));
        }
    }
    let output = std::process::Command::new("python3").args(["-c", "import sys; print(sys.prefix)"]).output();
    match output {
        Ok(out) if out.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
        _ => Err(KernelError::Install {
            path: PathBuf::from("sys.prefix"),
            detail: "no active Python environment (VIRTUAL_ENV, CONDA_PREFIX) and `python3` did not answer; \
                     use --user or --prefix"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_a_spec_jupyter_can_launch() {
        let prefix = tempfile::tempdir().unwrap();
        let dir = install(&Location::Prefix(prefix.path().to_path_buf()), Path::new("/opt/bin/rayrepl")).unwrap();
        assert_eq!(dir, prefix.path().join("share/jupyter/kernels/rayrepl"));
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("kernel.json")).unwrap()).unwrap();
        assert_eq!(spec["argv"][0], "/opt/bin/rayrepl");
        assert_eq!(spec["argv"][4], "{connection_file}");
        assert_eq!(spec["display_name"], "Rust (rayrepl)");
        assert_eq!(spec["interrupt_mode"], "message");
        assert!(std::fs::read(dir.join("logo-64x64.png")).unwrap().starts_with(b"\x89PNG"));
    }
}

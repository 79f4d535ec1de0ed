//! Files and directories only their owner may read: data directories (0700), databases with
//! their WAL/SHM files, key files, tokens and process logs (0600), whatever the umask.
//!
//! A data directory holds token hashes, bundle payloads and sealed keys; a log names peers and
//! paths. The modes are set explicitly at creation (and tightened when an older ztmesh left
//! the file wider), so nothing depends on the umask of whoever started the process. This
//! module must never widen a mode, nor follow the umask for anything it creates.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Mode of a data directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of a private file.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with mode 0700, and sets `path` itself to 0700 when
/// it already existed (a data directory the operator made with `mkdir`).
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder.create(path)?;
    set_mode(path, PRIVATE_DIR_MODE)
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename) with mode 0600.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = private_options().truncate(true).open(&tmp)?;
        // A stale temp file from an older version keeps its mode through `open`.
        set_file_mode(&file, PRIVATE_FILE_MODE)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Creates (truncating) a process log file with mode 0600.
pub fn create_private_log(path: &Path) -> std::io::Result<File> {
    let file = private_options().truncate(true).open(path)?;
    set_file_mode(&file, PRIVATE_FILE_MODE)?;
    Ok(file)
}

/// Prepares an SQLite database file before SQLite opens it: creates it empty with mode 0600
/// when missing, else tightens it and its `-wal`/`-shm` files to 0600. SQLite creates the
/// WAL and SHM files with the mode of the main file, so this covers all three.
pub fn prepare_private_database(path: &Path) -> std::io::Result<()> {
    let file = private_options().open(path)?;
    set_file_mode(&file, PRIVATE_FILE_MODE)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match set_mode(Path::new(&side), PRIVATE_FILE_MODE) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    options
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn set_file_mode(file: &File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_file_mode(_file: &File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_left_wide_by_an_older_version_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = data.join("state.db");
        let wal = data.join("state.db-wal");
        let log = data.join("run.log");
        for file in [&db, &wal, &log] {
            std::fs::write(file, b"").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        create_private_dir(&data).unwrap();
        prepare_private_database(&db).unwrap();
        create_private_log(&log).unwrap();
        write_private_file(&data.join("admin.token"), b"x").unwrap();
        assert_eq!(mode(&data), 0o700);
        for file in [&db, &wal, &log, &data.join("admin.token")] {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        // Missing parents are private too.
        let nested = dir.path().join("a/b/c");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
    }
}

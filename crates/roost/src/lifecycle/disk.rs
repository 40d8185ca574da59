//! Free space on the disk that holds the database (SQLite's file, else the data directory).

use std::path::Path;

/// Space on one file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpace {
    /// Free for an unprivileged writer (what SQLite can still use as the `roost` user).
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl DiskSpace {
    /// Whether less than `percent` of the disk is free.
    pub fn is_low(&self, percent: u8) -> bool {
        (self.free_bytes as u128) * 100 < (self.total_bytes as u128) * u128::from(percent)
    }
}

/// The file system holding `path` (a file or directory that exists).
pub fn space_at(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated path and `stats` a buffer of the right type that
    // statvfs fills when it returns 0.
    let stats = unsafe {
        if libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stats.assume_init()
    };
    let block = stats.f_frsize as u64;
    Ok(DiskSpace { free_bytes: stats.f_bavail as u64 * block, total_bytes: stats.f_blocks as u64 * block })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_low_below_the_percentage() {
        let disk = DiskSpace { free_bytes: 9, total_bytes: 100 };
        assert!(disk.is_low(10));
        assert!(!disk.is_low(9));
        let here = space_at(Path::new(".")).unwrap();
        assert!(here.total_bytes > 0 && here.free_bytes <= here.total_bytes);
        assert!(space_at(Path::new("/no/such/dir")).is_err());
    }
}

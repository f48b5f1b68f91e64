//! Reading configuration files (policy, passwords) without trusting what
//! the path names: it must be a regular file (after following symlinks),
//! it is opened without blocking (a FIFO would block `open` and `read`
//! forever), checked again on the open descriptor (the path may have been
//! swapped in between), and read up to a size bound (`/dev/zero` would grow
//! the VM without end). Every error names the file.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path is, for the error message of a path that is no regular file.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn not_regular(meta: &Metadata) -> String {
    format!("not a regular file ({}); refused", kind(meta))
}

/// The contents of the regular file at `path` (symlinks followed), at most
/// `max` bytes, and its metadata. `Err` is a reason without the path.
pub fn read_regular(path: &Path, max: u64) -> Result<(Vec<u8>, Metadata), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > max {
        return Err(format!("file larger than {max} bytes; refused"));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > max {
        return Err(format!("file larger than {max} bytes; refused"));
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    take_read(f, max, &mut text)?;
    Ok((text, meta))
}

fn take_read(f: File, max: u64, out: &mut Vec<u8>) -> Result<(), String> {
    f.take(max + 1).read_to_end(out).map_err(|e| format!("cannot read: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!("file larger than {max} bytes; refused"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("warden-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn regular_files_are_read_and_others_refused() {
        let d = tmpdir("kinds");
        let f = d.join("ok");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_regular(&f, 100).unwrap().0, b"hello");
        let link = d.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read_regular(&link, 100).unwrap().0, b"hello");
        assert!(read_regular(&f, 4).unwrap_err().contains("larger than 4 bytes"));
        assert!(read_regular(&d, 100).unwrap_err().contains("a directory"));
        let zero = d.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_regular(&zero, 100).unwrap_err().contains("a character device"));
        assert!(read_regular(&d.join("missing"), 100).unwrap_err().starts_with("cannot read"));
    }

    /// A FIFO with no writer: refused at once, never waited on.
    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = tmpdir("fifo");
        let p = d.join("fifo");
        let st = std::process::Command::new("mkfifo").arg(&p).status().unwrap();
        assert!(st.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        std::thread::spawn(move || tx.send(read_regular(&p2, 100)).unwrap());
        let r = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("did not block");
        assert!(r.unwrap_err().contains("a FIFO"));
    }
}

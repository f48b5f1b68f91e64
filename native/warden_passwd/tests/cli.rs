//! Runs the `vmq-warden-passwd` binary against files in a temporary folder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use warden_core::credentials::{PasswordFile, SchemeKind};

const BIN: &str = env!("CARGO_BIN_EXE_vmq-warden-passwd");
/// Cheap argon2 parameters so the tests stay fast.
const CHEAP: &[&str] = &["--cost", "1", "--memory", "64"];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("warden_passwd_{tag}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&str>) {
    let out = run(args, stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn with_cheap<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = CHEAP.to_vec();
    v.extend_from_slice(args);
    v
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_add_update_delete() {
    let d = TempDir::new("cycle");
    let f = d.file("passwd");
    ok(&with_cheap(&["-c", "-b", p(&f), "alice", "pw-a"]), None);
    let pf = load(&f);
    assert_eq!(pf.len(), 1);
    let h = pf.get(b"alice").unwrap();
    assert_eq!(h.scheme(), SchemeKind::Argon2);
    assert!(h.verify(b"pw-a"));

    // Add a second user with every scheme in turn, then update alice.
    ok(&["-b", "--scheme", "sha512", p(&f), "bob", "pw-b"], None);
    ok(&["-b", "--scheme", "bcrypt", "--cost", "4", p(&f), "carol", "pw-c"], None);
    ok(&["-b", "--scheme=pbkdf2", "--cost=10", p(&f), "dave", "pw-d"], None);
    ok(&with_cheap(&["-b", p(&f), "alice", "pw-a2"]), None);
    let pf = load(&f);
    assert_eq!(pf.len(), 4);
    assert!(pf.warnings().is_empty(), "{:?}", pf.warnings());
    assert!(pf.get(b"alice").unwrap().verify(b"pw-a2"));
    assert!(!pf.get(b"alice").unwrap().verify(b"pw-a"));
    assert_eq!(pf.get(b"bob").unwrap().scheme(), SchemeKind::Sha512Salted);
    assert_eq!(pf.get(b"carol").unwrap().scheme(), SchemeKind::Bcrypt);
    assert_eq!(pf.get(b"dave").unwrap().scheme(), SchemeKind::MosquittoPbkdf2);
    assert!(pf.get(b"carol").unwrap().verify(b"pw-c"));
    assert!(pf.get(b"dave").unwrap().verify(b"pw-d"));
    // Alice's line stayed first (updated in place).
    let text = fs::read_to_string(&f).unwrap();
    assert!(text.starts_with("alice:$argon2id$"), "{text}");

    ok(&["-D", p(&f), "bob"], None);
    let pf = load(&f);
    assert_eq!(pf.len(), 3);
    assert!(pf.get(b"bob").is_none());

    // Deleting a missing user fails and leaves the file alone.
    let before = fs::read(&f).unwrap();
    let out = run(&["-D", p(&f), "bob"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read(&f).unwrap(), before);
}

#[test]
fn password_from_stdin_twice() {
    let d = TempDir::new("stdin");
    let f = d.file("passwd");
    ok(&with_cheap(&["-c", p(&f), "erin"]), Some("s3cret\ns3cret\n"));
    assert!(load(&f).get(b"erin").unwrap().verify(b"s3cret"));

    let out = run(&with_cheap(&[p(&f), "erin"]), Some("one\ntwo\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not match"));
    let out = run(&with_cheap(&[p(&f), "erin"]), Some("one\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(load(&f).get(b"erin").unwrap().verify(b"s3cret"));
}

#[test]
fn keeps_other_lines_and_drops_shadowing_duplicates() {
    let d = TempDir::new("keep");
    let f = d.file("passwd");
    ok(&["-c", "-b", "--scheme", "sha512", p(&f), "x", "px"], None);
    let x_line = fs::read_to_string(&f).unwrap();
    let original = format!("# managed by hand\r\n{x_line}garbage line\nalice:$6$old\n\nalice:$6$older\n");
    fs::write(&f, &original).unwrap();
    ok(&["-b", "--scheme", "sha512", p(&f), "alice", "new"], None);
    let text = fs::read_to_string(&f).unwrap();
    assert!(text.starts_with("# managed by hand\r\n"), "CRLF kept: {text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# managed by hand");
    assert_eq!(format!("{}\n", lines[1]), x_line);
    assert_eq!(lines[2], "garbage line");
    assert!(lines[3].starts_with("alice:$6$"));
    assert_eq!(lines[4], "");
    assert_eq!(lines.len(), 5, "{text}");
    let pf = load(&f);
    assert!(pf.get(b"alice").unwrap().verify(b"new"));
    assert!(pf.get(b"x").unwrap().verify(b"px"));
}

#[test]
fn usage_errors() {
    let d = TempDir::new("usage");
    let f = d.file("passwd");
    for args in [
        vec!["-b", p(&f), "u"],             // missing password
        vec![p(&f)],                        // missing user
        vec!["-b", "--scheme", "md5", p(&f), "u", "pw"],
        vec!["-b", "--cost", "x", p(&f), "u", "pw"],
        vec!["-b", "--scheme", "sha512", "--cost", "5", p(&f), "u", "pw"],
        vec!["-b", "--scheme", "bcrypt", "--memory", "64", p(&f), "u", "pw"],
        vec!["-c", "-b", p(&f), "bad:user", "pw"],
        vec!["-c", "-b", p(&f), "#user", "pw"],
        vec!["-D", "-b", p(&f), "u"],
        vec!["-U", p(&f)],
        vec!["-x", p(&f), "u"],
    ] {
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(!f.exists());
    // Without -c the file must exist.
    let out = run(&["-b", "--scheme", "sha512", p(&f), "u", "pw"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(!f.exists());
    // Absurd costs are refused by the core.
    let out = run(&["-c", "-b", "--scheme", "bcrypt", "--cost", "31", p(&f), "u", "pw"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(!f.exists());
    // Help.
    assert!(String::from_utf8_lossy(&run(&["--help"], None).stdout).contains("usage"));
}

#[cfg(unix)]
#[test]
fn permissions_new_and_preserved() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("perm");
    let f = d.file("passwd");
    ok(&["-c", "-b", "--scheme", "sha512", p(&f), "u", "pw"], None);
    assert_eq!(mode(&f), 0o600);
    assert!(!load(&f).readable_by_others());

    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    ok(&["-b", "--scheme", "sha512", p(&f), "v", "pw"], None);
    assert_eq!(mode(&f), 0o640, "update keeps the mode");
    ok(&["-c", "-b", "--scheme", "sha512", p(&f), "w", "pw"], None);
    assert_eq!(mode(&f), 0o600, "-c recreates with 0600");
    assert_eq!(load(&f).len(), 1);
}

#[cfg(unix)]
#[test]
fn atomic_replace_and_no_leftovers() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("atomic");
    let f = d.file("passwd");
    ok(&["-c", "-b", "--scheme", "sha512", p(&f), "u", "pw"], None);
    let inode_before = fs::metadata(&f).unwrap().ino();
    // A reader holding the old file keeps seeing the old content.
    let old = fs::File::open(&f).unwrap();
    ok(&["-b", "--scheme", "sha512", p(&f), "v", "pw"], None);
    assert_ne!(fs::metadata(&f).unwrap().ino(), inode_before, "replaced by rename, not rewritten");
    let mut old_text = String::new();
    std::io::Read::read_to_string(&mut &old, &mut old_text).unwrap();
    assert!(old_text.starts_with("u:") && !old_text.contains("v:"));
    // No temporary files left behind, also after a failure.
    let _ = run(&["-D", p(&f), "nobody"], None);
    let names: Vec<String> = fs::read_dir(&d.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["passwd".to_string()]);

    // Through a symlink: the real file is updated, the link stays.
    let link = d.file("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    ok(&["-b", "--scheme", "sha512", p(&link), "w", "pw"], None);
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(load(&f).get(b"w").is_some());
}

/// At a terminal the typed password is not echoed (like mosquitto_passwd):
/// the tool runs on a pseudo-terminal, and what the terminal shows must not
/// contain the password, while the file gets it.
#[test]
#[allow(unsafe_code)]
fn terminal_prompt_does_not_echo() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let d = TempDir::new("tty");
    let f = d.file("passwd");
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors this test owns from here on.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty");
    // SAFETY: both descriptors are open and owned by nothing else.
    let (mut term, tty) = unsafe { (fs::File::from_raw_fd(master), fs::File::from_raw_fd(slave)) };
    let mut child = Command::new(BIN)
        .args(with_cheap(&["-c", p(&f), "tina"]))
        .stdin(Stdio::from(tty.try_clone().unwrap()))
        .stdout(Stdio::from(tty.try_clone().unwrap()))
        .stderr(Stdio::from(tty))
        .spawn()
        .unwrap();
    let mut shown = Vec::new();
    let wait_for = |term: &mut fs::File, shown: &mut Vec<u8>, what: &str| {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(shown).contains(what) {
            let n = term.read(&mut buf).expect("terminal output");
            assert!(n > 0, "terminal closed before {what:?}: {}", String::from_utf8_lossy(shown));
            shown.extend_from_slice(&buf[..n]);
        }
    };
    wait_for(&mut term, &mut shown, "Password: ");
    term.write_all(b"tty-secret-pw\n").unwrap();
    wait_for(&mut term, &mut shown, "Reenter password: ");
    term.write_all(b"tty-secret-pw\n").unwrap();
    assert!(child.wait().unwrap().success());
    // The rest of what the terminal shows (EIO once the tool has closed it).
    let mut buf = [0u8; 256];
    while let Ok(n) = term.read(&mut buf) {
        if n == 0 {
            break;
        }
        shown.extend_from_slice(&buf[..n]);
    }
    let shown = String::from_utf8_lossy(&shown);
    assert!(!shown.contains("tty-secret-pw"), "the password was echoed: {shown:?}");
    assert!(load(&f).get(b"tina").unwrap().verify(b"tty-secret-pw"));
}

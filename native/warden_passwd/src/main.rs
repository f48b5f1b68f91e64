//! `vmq-warden-passwd`: add, update or delete users in a vmq_warden password
//! file, like `mosquitto_passwd` / `vmq_passwd`.
//!
//! ```text
//! vmq-warden-passwd [-c] [-b] [--scheme S] [--cost N] [--memory KIB] FILE USER [PASSWORD]
//! vmq-warden-passwd -D FILE USER
//! ```
//!
//! - `-c` creates (or truncates) FILE; without it FILE must exist.
//! - `-b` takes PASSWORD from the command line; otherwise it is read twice
//!   from standard input (one line each) and both must match.
//! - `--scheme argon2id|bcrypt|sha512|pbkdf2` (default argon2id, m=19456,t=2,p=1).
//!   `--cost`: argon2id time cost, bcrypt cost, pbkdf2 iterations.
//!   `--memory`: argon2id memory in KiB.
//! - `-D` deletes USER.
//!
//! Other lines (comments, other users, even lines it cannot parse) are kept
//! byte for byte. The file is replaced atomically (temporary file in the same
//! directory, fsync, rename). A new file (and any file written with `-c`)
//! gets mode 0600; an updated file keeps its mode.
//!
//! Exit status: 0 done, 1 failure, 2 usage error.
// Unsafe code only in `tty` (termios calls through libc, to read the
// password without echo); everything else is safe.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden_core::credentials::{hash_password, HashScheme, PasswordFile, PasswordHash};

const USAGE: &str = "\
usage: vmq-warden-passwd [-c] [-b] [--scheme argon2id|bcrypt|sha512|pbkdf2] [--cost N] [--memory KIB] FILE USER [PASSWORD]
       vmq-warden-passwd -D FILE USER

  -c            create FILE (overwrites an existing one)
  -b            take PASSWORD from the command line (else: read it twice from stdin)
  -D            delete USER from FILE
  --scheme S    hash scheme: argon2id (default, m=19456,t=2,p=1), bcrypt (cost 10),
                pbkdf2 (mosquitto $7$, 100000 iterations), sha512 ($6$, fast: legacy only)
  --cost N      argon2id time cost, bcrypt cost or pbkdf2 iterations
  --memory KIB  argon2id memory in KiB";

#[derive(Debug)]
enum Failure {
    Help,
    Usage(String),
    Run(String),
}

type Res<T> = Result<T, Failure>;

fn usage<T>(msg: impl Into<String>) -> Res<T> {
    Err(Failure::Usage(msg.into()))
}

fn run_err(msg: impl Into<String>) -> Failure {
    Failure::Run(msg.into())
}

#[derive(Debug, Default)]
struct Opts {
    create: bool,
    batch: bool,
    delete: bool,
    scheme: Option<String>,
    cost: Option<u32>,
    memory: Option<u32>,
    positional: Vec<OsString>,
}

fn os_bytes(s: &OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

fn parse_number(what: &str, v: Option<OsString>) -> Res<u32> {
    let Some(v) = v else { return usage(format!("{what} needs a value")) };
    match v.to_str().and_then(|s| s.parse::<u32>().ok()) {
        Some(n) => Ok(n),
        None => usage(format!("{what}: not a number")),
    }
}

fn parse_args(args: Vec<OsString>) -> Res<Opts> {
    let mut o = Opts::default();
    let mut it = args.into_iter();
    let mut only_positional = false;
    while let Some(a) = it.next() {
        if only_positional {
            o.positional.push(a);
            continue;
        }
        let s = a.to_str().unwrap_or("");
        let (flag, inline) = match s.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(OsString::from(v))),
            _ => (s, None),
        };
        match flag {
            "--" => only_positional = true,
            "-h" | "--help" => return Err(Failure::Help),
            "-c" => o.create = true,
            "-b" => o.batch = true,
            "-D" => o.delete = true,
            "-U" => return usage("-U (upgrading plaintext files) is not supported"),
            "--scheme" => {
                let v = inline.or_else(|| it.next());
                o.scheme = Some(v.and_then(|v| v.into_string().ok()).ok_or(Failure::Usage("--scheme needs a value".into()))?);
            }
            "--cost" => o.cost = Some(parse_number("--cost", inline.or_else(|| it.next()))?),
            "--memory" => o.memory = Some(parse_number("--memory", inline.or_else(|| it.next()))?),
            f if f.starts_with('-') && f.len() > 1 => {
                // Combined short flags such as -cb.
                if f.starts_with("--") || !f[1..].chars().all(|c| matches!(c, 'c' | 'b' | 'D')) {
                    return usage(format!("unknown option {f}"));
                }
                for c in f[1..].chars() {
                    match c {
                        'c' => o.create = true,
                        'b' => o.batch = true,
                        _ => o.delete = true,
                    }
                }
            }
            _ => o.positional.push(a),
        }
    }
    Ok(o)
}

fn scheme_of(o: &Opts) -> Res<HashScheme> {
    let name = o.scheme.as_deref().unwrap_or("argon2id");
    let mut scheme: HashScheme = match name.parse() {
        Ok(s) => s,
        Err(_) => return usage(format!("unknown scheme '{name}' (argon2id, bcrypt, sha512, pbkdf2)")),
    };
    match &mut scheme {
        HashScheme::Argon2id { memory_kib, time, .. } => {
            if let Some(c) = o.cost {
                *time = c;
            }
            if let Some(m) = o.memory {
                *memory_kib = m;
            }
        }
        HashScheme::Bcrypt { cost } => {
            if let Some(c) = o.cost {
                *cost = c;
            }
        }
        HashScheme::Pbkdf2 { iterations } => {
            if let Some(c) = o.cost {
                *iterations = c;
            }
        }
        HashScheme::Sha512 => {
            if o.cost.is_some() {
                return usage("--cost does not apply to sha512");
            }
        }
    }
    if o.memory.is_some() && !matches!(scheme, HashScheme::Argon2id { .. }) {
        return usage("--memory applies to argon2id only");
    }
    Ok(scheme)
}

fn check_user(user: &[u8]) -> Res<()> {
    if user.is_empty() {
        return usage("empty user name");
    }
    if user.contains(&b':') {
        return usage("user name must not contain ':'");
    }
    if user.iter().any(|b| b.is_ascii_control()) {
        return usage("user name must not contain control characters");
    }
    if user[0] == b'#' || user[0].is_ascii_whitespace() || user[user.len() - 1].is_ascii_whitespace() {
        return usage("user name must not start with '#' or start/end with blanks");
    }
    Ok(())
}

/// Turning the terminal's echo off while a password is typed (like
/// mosquitto_passwd and passwd(1)): the typed characters are not shown, the
/// newline is. When standard input is not a terminal nothing changes and a
/// line is read as it comes (scripts, pipes).
#[allow(unsafe_code)]
mod tty {
    /// Restores the terminal's settings when dropped.
    pub struct NoEcho {
        saved: libc::termios,
    }

    /// `Some` when standard input is a terminal and its echo is now off.
    pub fn no_echo() -> Option<NoEcho> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a termios struct
        // this function owns; a zeroed termios is a valid value to fill.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &t) != 0 {
                return None;
            }
            Some(NoEcho { saved })
        }
    }

    impl Drop for NoEcho {
        fn drop(&mut self) {
            // SAFETY: restores the settings read in `no_echo` on the same fd.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.saved);
            }
        }
    }
}

fn read_password() -> Res<Vec<u8>> {
    let stdin = io::stdin();
    let mut lines = stdin.lock();
    let mut read_one = |prompt: &str| -> Res<Option<Vec<u8>>> {
        // Echo off before the prompt shows: whatever is typed after it is hidden.
        let echo_off = tty::no_echo();
        eprint!("{prompt}");
        let _ = io::stderr().flush();
        let mut buf = Vec::new();
        let read = lines.read_until(b'\n', &mut buf);
        drop(echo_off);
        let n = read.map_err(|e| run_err(format!("reading password: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.ends_with(b"\n") {
            buf.pop();
        }
        if buf.ends_with(b"\r") {
            buf.pop();
        }
        Ok(Some(buf))
    };
    let first = read_one("Password: ")?.ok_or_else(|| run_err("no password given on standard input"))?;
    let second = read_one("Reenter password: ")?.ok_or_else(|| run_err("password not confirmed (expected it twice)"))?;
    if first != second {
        return Err(run_err("passwords do not match"));
    }
    Ok(first)
}

/// Splits into lines keeping each line's own bytes (without '\n').
fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    if text.is_empty() {
        return Vec::new();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.split(|b| *b == b'\n').collect()
}

/// The user a line defines, if it looks like `user:...` (comments excluded).
fn line_user(line: &[u8]) -> Option<&[u8]> {
    let trimmed = line.trim_ascii_start();
    if trimmed.is_empty() || trimmed[0] == b'#' {
        return None;
    }
    let colon = line.iter().position(|b| *b == b':')?;
    Some(&line[..colon])
}

fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "passwd".into());
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!(".{name}.tmp.{}", std::process::id()))
}

/// Writes `content` to `target` atomically; `mode` for the new file.
fn write_atomic(target: &Path, content: &[u8], mode: u32) -> Res<()> {
    let tmp = temp_path(target);
    let result = (|| -> io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // The umask may have cleared bits of `mode`; set it exactly.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)?;
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        run_err(format!("{}: {e}", target.display()))
    })
}

fn run(args: Vec<OsString>) -> Res<String> {
    let o = parse_args(args)?;
    if o.delete && (o.create || o.batch || o.scheme.is_some() || o.cost.is_some() || o.memory.is_some()) {
        return usage("-D takes no other options");
    }
    let want = if o.delete || !o.batch { 2 } else { 3 };
    if o.positional.len() != want {
        return usage(format!("expected {want} arguments, got {}", o.positional.len()));
    }
    let mut path = PathBuf::from(&o.positional[0]);
    let user = os_bytes(&o.positional[1]);
    check_user(&user)?;
    let shown_user = String::from_utf8_lossy(&user).into_owned();
    let scheme = if o.delete { None } else { Some(scheme_of(&o)?) };

    // Work on the real file behind a symlink, so the rename lands next to it.
    if let Ok(real) = fs::canonicalize(&path) {
        path = real;
    }
    let existing: Option<(Vec<u8>, u32)> = if o.create {
        None
    } else {
        let text = fs::read(&path).map_err(|e| run_err(format!("{}: {e}", path.display())))?;
        let meta = fs::metadata(&path).map_err(|e| run_err(format!("{}: {e}", path.display())))?;
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            meta.permissions().mode() & 0o7777
        };
        #[cfg(not(unix))]
        let mode = {
            let _ = meta;
            0o600
        };
        Some((text, mode))
    };
    let (old_text, mode) = existing.unwrap_or((Vec::new(), 0o600));
    let old_lines = split_lines(&old_text);

    let mut out: Vec<u8> = Vec::with_capacity(old_text.len() + 128);
    let message;
    let mut expect: Option<(Vec<u8>, String)> = None;
    if let Some(scheme) = scheme {
        let password = if o.batch { os_bytes(&o.positional[2]) } else { read_password()? };
        if password.is_empty() {
            return Err(run_err("empty password"));
        }
        let hash = hash_password(scheme, &password).map_err(|e| run_err(format!("hashing: {e}")))?;
        let parsed = PasswordHash::parse(&hash).map_err(|e| run_err(format!("own hash does not parse: {e}")))?;
        if !parsed.verify(&password) {
            return Err(run_err("own hash does not verify"));
        }
        let mut new_line = user.clone();
        new_line.push(b':');
        new_line.extend_from_slice(hash.as_bytes());
        let mut replaced = false;
        for line in &old_lines {
            if line_user(line) == Some(&user[..]) {
                if !replaced {
                    out.extend_from_slice(&new_line);
                    out.push(b'\n');
                    replaced = true;
                }
                // Later definitions of the same user would win; drop them.
                continue;
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        if !replaced {
            out.extend_from_slice(&new_line);
            out.push(b'\n');
        }
        message = format!("{} user '{shown_user}'", if replaced { "updated" } else { "added" });
        expect = Some((password, hash));
    } else {
        let mut found = false;
        for line in &old_lines {
            if line_user(line) == Some(&user[..]) {
                found = true;
                continue;
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        if !found {
            return Err(run_err(format!("user '{shown_user}' not found in {}", path.display())));
        }
        message = format!("deleted user '{shown_user}'");
    }

    // Check what is about to be written says what we mean.
    let check = PasswordFile::parse_bytes(&out, &path.display().to_string());
    match &expect {
        Some((password, hash)) => match check.get(&user) {
            Some(h) if h.verify(password) && PasswordHash::parse(hash).map(|p| p.fingerprint()).ok() == Some(h.fingerprint()) => {}
            _ => return Err(run_err("internal error: the new file does not hold the new hash")),
        },
        None => {
            if check.get(&user).is_some() {
                return Err(run_err("internal error: the user is still in the new file"));
            }
        }
    }
    write_atomic(&path, &out, if o.create { 0o600 } else { mode })?;
    Ok(message)
}

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(msg) => {
            eprintln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(Failure::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("vmq-warden-passwd: {msg}");
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("vmq-warden-passwd: {msg}");
            ExitCode::from(1)
        }
    }
}

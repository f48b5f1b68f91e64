//! The library's entry point for the BEAM (`nif_init`): what Rustler's
//! `rustler::init!` generates, plus an `upgrade` callback, which Rustler
//! 0.39 does not offer; and `stack_args_nif!`, what `#[rustler::nif]`
//! generates without its per-call `Vec` (docs/DESIGN.md).
//!
//! Why the callback matters: VerneMQ's plugin manager starts a plugin and
//! then calls `code:load_file/1` on every module of its application,
//! `vmq_warden_nif` included. The fresh module instance attaches the
//! library in its `-on_load`, while the previous instance still holds it;
//! the VM then calls `upgrade`, not `load`, and without an `upgrade`
//! callback `erlang:load_nif/2` fails and every NIF of the new instance is a
//! stub. With it, the new instance shares the library that is already
//! mapped: its statics (registry, firewall, counters) carry over untouched.
//! The library defines no resource types, so there is nothing to take over.

use std::sync::OnceLock;

use rustler::codegen_runtime::{c_int, c_void, ErlNifEntry, ErlNifEnv, ErlNifTerm, ResourceRegistration};
use rustler::sys::ErlNifFunc;
use rustler::{Env, Nif, Term};

/// The entry is built once and lives as long as the library; the VM only
/// reads it (the raw pointers inside are to leaked, immutable data).
struct Entry(ErlNifEntry);
// SAFETY: the entry is written once in `get_or_init` and only read after.
unsafe impl Sync for Entry {}
unsafe impl Send for Entry {}

static ENTRY: OnceLock<Entry> = OnceLock::new();

/// Shared by `load` and `upgrade`: the same set-up either way.
fn on_load(_env: Env<'_>, _info: Term<'_>) -> bool {
    crate::logbridge::install();
    true
}

unsafe extern "C" fn load(env: *mut ErlNifEnv, _priv: *mut *mut c_void, info: ErlNifTerm) -> c_int {
    // SAFETY: the VM hands a valid environment and term for this call.
    unsafe {
        let env = Env::new_init_env(&env, env);
        if ResourceRegistration::register_all_collected(env).is_err() {
            return 1;
        }
        rustler::codegen_runtime::handle_nif_init_call(on_load, env, Term::new(env, info))
    }
}

unsafe extern "C" fn upgrade(
    env: *mut ErlNifEnv,
    _priv: *mut *mut c_void,
    _old_priv: *mut *mut c_void,
    info: ErlNifTerm,
) -> c_int {
    // SAFETY: as in `load`. No resource types to re-open (see module doc).
    unsafe {
        let env = Env::new_init_env(&env, env);
        rustler::codegen_runtime::handle_nif_init_call(on_load, env, Term::new(env, info))
    }
}

/// Looked up by name by `erlang:load_nif/2`.
#[no_mangle]
pub extern "C" fn nif_init() -> *const ErlNifEntry {
    let entry = ENTRY.get_or_init(|| {
        // SAFETY: fills Rustler's table of enif_* symbols (a no-op where they
        // are linked directly, as on Linux); called before any NIF runs.
        unsafe { rustler::codegen_runtime::internal_write_symbols() };
        let funcs: &'static [ErlNifFunc] = Box::leak(
            rustler::codegen_runtime::inventory::iter::<Nif>()
                .map(Nif::get_def)
                .collect::<Box<[_]>>(),
        );
        let mut entry = ErlNifEntry::new(c"vmq_warden_nif", funcs, load);
        entry.upgrade = Some(upgrade);
        Entry(entry)
    });
    &entry.0
}

/// Runs the body of a NIF registered with [`stack_args_nif!`]: its arguments
/// in an array on the stack, a panic caught and answered as
/// `#[rustler::nif]` answers it. Rustler 0.39's wrapper collects the
/// arguments into a `Vec` on every call: for the hooks, one malloc a call,
/// four of the nine a connect made (docs/DESIGN.md, "The native library
/// and the plugin manager").
///
/// # Safety
/// `raw_env` and `argv` as the VM passes them to a NIF registered with
/// arity `N`.
pub(crate) unsafe fn call_with_stack_args<const N: usize>(
    raw_env: *mut ErlNifEnv,
    argc: c_int,
    argv: *const ErlNifTerm,
    body: for<'a> fn(Env<'a>, [Term<'a>; N]) -> rustler::NifResult<Term<'a>>,
) -> ErlNifTerm {
    let lifetime = ();
    // SAFETY: the VM's environment for this call, used only during it.
    let env = unsafe { Env::new(&lifetime, raw_env) };
    let result = std::panic::catch_unwind(move || {
        if usize::try_from(argc).ok() != Some(N) {
            return Err(rustler::Error::BadArg);
        }
        // SAFETY: the VM passes `argc` (checked: N) terms of this environment.
        let argv = unsafe { std::slice::from_raw_parts(argv, N) };
        body(env, std::array::from_fn(|i| unsafe { Term::new(env, argv[i]) }))
    });
    // SAFETY: the answer is built in and for this call's environment.
    unsafe { rustler::codegen_runtime::handle_nif_result(result, env).apply(env) }
}

/// Registers `$body` (`fn(Env<'a>, [Term<'a>; $arity]) -> NifResult<Term<'a>>`)
/// as the NIF `$name/$arity` on a normal scheduler, as `#[rustler::nif]`
/// would, through [`call_with_stack_args`].
macro_rules! stack_args_nif {
    ($name:literal, $arity:literal, $body:path) => {
        const _: () = {
            unsafe extern "C" fn raw(
                env: *mut rustler::sys::ErlNifEnv,
                argc: rustler::codegen_runtime::c_int,
                argv: *const rustler::sys::ErlNifTerm,
            ) -> rustler::sys::ErlNifTerm {
                // SAFETY: called by the VM, with this NIF's arguments.
                unsafe { $crate::entry::call_with_stack_args::<$arity>(env, argc, argv, $body) }
            }
            rustler::codegen_runtime::inventory::submit!(rustler::Nif {
                name: concat!($name, "\0").as_ptr() as *const rustler::codegen_runtime::c_char,
                arity: $arity,
                flags: rustler::SchedulerFlags::Normal as rustler::codegen_runtime::c_uint,
                raw_func: raw,
            });
        };
    };
}
pub(crate) use stack_args_nif;

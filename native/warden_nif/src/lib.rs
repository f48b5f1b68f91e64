//! The NIF library behind `vmq_warden_nif`. Term conversion only: every
//! decision is made in `warden_core`.

#[rustler::nif]
fn ping() -> &'static str {
    "pong"
}

rustler::init!("vmq_warden_nif");

//! vmq_warden's core: everything the plugin decides and remembers, with no
//! dependency on Rustler or the BEAM, so it is unit-tested with `cargo test`.
//!
//! The NIF crate (`warden_nif`) only converts Erlang terms into the types of
//! [`types`] and back.
#![forbid(unsafe_code)]

pub mod calltime;
pub mod cluster;
pub mod credentials;
pub mod events;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod registry;
pub mod striped;
pub mod firewall;
pub mod limits;
pub mod loglimit;
pub mod logqueue;
pub mod obfuscation;
pub mod policy;
pub mod types;
pub mod warden;

pub use ipnet::IpNet;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// A fixed-seed xorshift generator: each call gives a number below its
    /// argument, the same sequence on every run.
    pub fn below(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;

    /// A place inside a method where a test runs code of its own (to see
    /// whether a second call gets in there): `reach` runs what `set` gave.
    #[derive(Default)]
    pub struct PausePoint(Mutex<Option<Arc<dyn Fn() + Send + Sync>>>);

    impl PausePoint {
        pub fn set(&self, pause: impl Fn() + Send + Sync + 'static) {
            *self.0.lock() = Some(Arc::new(pause));
        }

        pub fn clear(&self) {
            *self.0.lock() = None;
        }

        pub fn reach(&self) {
            let pause = self.0.lock().clone();
            if let Some(pause) = pause {
                pause();
            }
        }
    }

    /// Runs `first` on a thread until it reaches the pause point `at`, then
    /// `second` on another; `first` waits there for `second` to end, or
    /// 300 ms if it is (rightly) held back.
    pub fn one_inside_the_other<T: Send + Sync + 'static>(
        target: &Arc<T>,
        at: fn(&T) -> &PausePoint,
        first: impl FnOnce(&T) + Send + 'static,
        second: impl FnOnce(&T) + Send + 'static,
    ) {
        let (paused_tx, paused_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let done_rx = Mutex::new(done_rx);
        let once = std::sync::atomic::AtomicBool::new(true);
        at(target).set(move || {
            if once.swap(false, std::sync::atomic::Ordering::Relaxed) {
                paused_tx.send(()).unwrap();
                let _ = done_rx.lock().recv_timeout(Duration::from_millis(300));
            }
        });
        let a = {
            let target = Arc::clone(target);
            std::thread::spawn(move || first(&target))
        };
        paused_rx.recv().unwrap();
        let b = {
            let target = Arc::clone(target);
            std::thread::spawn(move || {
                second(&target);
                let _ = done_tx.send(());
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        at(target).clear();
    }
}

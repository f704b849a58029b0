//! Process-level tests of the `rollcall` binary: it is spawned for real, configured by flags and
//! `ROLLCALL_*` variables, and stopped with real signals.

mod durability;
mod hardening;
mod logs;
mod registry;
mod services;
mod system;

//! copiste's tools, kept out of the library: the benchmarks (`copiste
//! bench …`), the national rehearsal (`copiste bench national`), the demo
//! data generator (`copiste demo-data`) and the stand-in export target
//! they run against. The `copiste` binary (cli/) exposes them as
//! subcommands; nothing of the service itself depends on them.

pub mod bench;
pub mod demo_data;
pub mod queries;
pub mod stub;

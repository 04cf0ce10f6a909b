//! Low-Latency HLS, pure core: no sockets, tasks or HTTP; frames and
//! wall-clock time come in as values.

pub mod params;

#[cfg(test)]
mod testutil;

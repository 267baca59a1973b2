//! Wire types that more than one Flywheel service reads or writes, kept in
//! one place so that the two ends of a contract cannot drift apart:
//!
//! - [`openai`]: the parts of an OpenAI request body that both the gateway
//!   (which checks them before routing) and the engine (which serves them)
//!   interpret.
//! - [`headers`]: the `x-flywheel-*` response headers in which the gateway
//!   tells a client which variant answered and what the request cost; the
//!   tuner's offline eval prices a fallback chain from them.
//! - [`error`]: the OpenAI error envelope every service answers with.
//! - [`keys`]: hashing of API keys and admin tokens, compared in constant
//!   time.
//!
//! Only plain data and its (de)serialisation live here: no HTTP stack, so
//! every crate can depend on it without pulling one in.

pub mod error;
pub mod headers;
pub mod keys;
pub mod openai;

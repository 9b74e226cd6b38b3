//! What `serve` offers browsers besides the channel: static files
//! (`--static DIR`) and a console page at the channel path
//! (`--devconsole`).

pub mod devconsole;
mod file_body;
pub mod static_files;

pub use file_body::FileBody;

//! What the command line's caller sees at the end: the documented exit
//! codes (0 fine, 1 failed, 2 usage error or unreachable target) and the
//! error that stands for "the command line was wrong".

use std::process::ExitCode;

/// A usage error found after parsing (a bad combination of flags, a file
/// that cannot be read): exit status 2, as clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code of a run that ended in `e`: 2 for a [`UsageError`]
/// anywhere in its chain, else 1.
pub fn code_of(e: &anyhow::Error) -> ExitCode {
    let usage = e.chain().any(|c| c.downcast_ref::<UsageError>().is_some());
    ExitCode::from(if usage { 2 } else { 1 })
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn usage_errors_exit_2_even_with_context() {
        let e = anyhow::Error::from(UsageError("bad flag".into()));
        assert_eq!(code_of(&e), ExitCode::from(2));
        let wrapped = Err::<(), _>(UsageError("bad flag".into())).context("reading flags");
        assert_eq!(code_of(&wrapped.unwrap_err()), ExitCode::from(2));
        assert_eq!(code_of(&anyhow::anyhow!("network")), ExitCode::from(1));
    }
}

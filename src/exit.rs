//! The process's exit status, one value per outcome (sysexits.h), from
//! `main` down to `--check`, `--probe` and `--once`. The numbers are part of
//! the command line's contract (popspool(8), "EXIT STATUS").

use std::process::ExitCode;

/// How a run of popspool ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything asked for was done.
    Ok,
    /// EX_USAGE: a bad command line.
    Usage,
    /// EX_NOINPUT: the configuration file is missing or unreadable.
    NoInput,
    /// EX_SOFTWARE: an internal error.
    Software,
    /// EX_CANTCREAT: a spool or state directory cannot be created or written.
    CantCreate,
    /// EX_TEMPFAIL: with `--once` or `--probe`, at least one account failed
    /// (network, TLS, authentication, server error); the rest were processed.
    TempFail,
    /// EX_CONFIG: the configuration is invalid.
    Config,
}

impl Exit {
    /// The status as the shell sees it.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 64,
            Exit::NoInput => 66,
            Exit::Software => 70,
            Exit::CantCreate => 73,
            Exit::TempFail => 75,
            Exit::Config => 78,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn codes_are_sysexits() {
        let all = [
            (Exit::Ok, 0),
            (Exit::Usage, 64),
            (Exit::NoInput, 66),
            (Exit::Software, 70),
            (Exit::CantCreate, 73),
            (Exit::TempFail, 75),
            (Exit::Config, 78),
        ];
        for (exit, code) in all {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }
}

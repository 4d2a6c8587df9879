//! The load-time guard of `salve actuate exec`: refuses a template that would let a value
//! from a command be parsed as code, or choose the program that runs.
//!
//! Running a program without a shell only keeps a value in one argument. What the program
//! does with that argument is its own business, and some programs parse an argument as code:
//! `sh -c`, `python3 -c`, an awk program, the command `ssh` sends to the remote shell. Others
//! run another program and hand it the rest of their arguments (`sudo`, `env`, `timeout`...),
//! so the guard looks through them to the program they run. It knows those programs' options,
//! and refuses rather than guesses: when it meets an option it does not know, it refuses any
//! placeholder after it, since the option may take the next argument as a value and shift
//! everything after it. Options of programs that parse code are refused placeholders
//! altogether (`perl -M{x}` loads a module of the command's choosing).
//!
//! `make` reads code from makefiles, and from any operand: a value may make it `NAME=VALUE`,
//! and make expands the value, `$(shell ...)` included, where the variable is used.
//!
//! Some programs take their operands as data but run the value of an option (`rsync -e`,
//! `git -c core.sshCommand=`, `git clone --upload-pack`, `tar --to-command`) or run commands
//! from a subcommand's arguments (`git submodule foreach`), and `find` reads an expression in
//! which a value could add `-exec`: the guard knows those, and where a value is only data
//! (`find -name {entity}`, `git -C /srv/{entity}`).
//!
//! A program it cannot classify (`systemctl`, a runbook script) gets its arguments as data;
//! what such a program does with them is beyond the guard. Any later argument that names a
//! shell or an interpreter is checked as a program too, in case the program before it runs it
//! (`find -exec sh -c`, a wrapper the guard does not know).

use std::collections::HashSet;

/// One argv element of a template, before placeholders are filled.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// The element as written in the map, placeholders included.
    pub text: &'a str,
    /// Whether it contains a placeholder.
    pub placeholder: bool,
    /// The fixed text before its first placeholder, all of it when it has none, with `{{`
    /// read as `{`.
    pub lead: &'a str,
}

/// Why a template is refused. Positions count argv elements, the program being 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// A placeholder would choose the program a wrapper runs.
    #[error("argument {position} (`{text}`) is the program that `{runner}` runs, and contains a placeholder: the program must be fixed in the map, so that no command can choose what runs")]
    ChosenProgram {
        /// Where.
        position: usize,
        /// The element.
        text: String,
        /// The wrapper that runs it.
        runner: String,
    },
    /// A placeholder sits where a program reads code, a script path or an option.
    #[error("argument {position} (`{text}`) is {what} of `{program}`, and contains a placeholder that would be parsed as code; {fix}")]
    Code {
        /// Where.
        position: usize,
        /// The element.
        text: String,
        /// The program that parses it.
        program: String,
        /// What the element is to the program.
        what: &'static str,
        /// How to write it instead.
        fix: &'static str,
    },
    /// A placeholder sits in arguments that a program joins into a shell command line.
    #[error("argument {position} (`{text}`) contains a placeholder, and `{program}` {how}, where the value would be parsed as shell code")]
    ShellLine {
        /// Where.
        position: usize,
        /// The element.
        text: String,
        /// The program.
        program: String,
        /// How it builds the command line.
        how: &'static str,
    },
    /// A placeholder sits where `find` reads its expression, not a test's value.
    #[error("argument {position} (`{text}`) is {what} of `find`, and contains a placeholder: a value there could add `-exec` or `-delete` to what find does; {fix}")]
    FindExpression {
        /// Where.
        position: usize,
        /// The element.
        text: String,
        /// What the element is to find.
        what: &'static str,
        /// How to write it instead.
        fix: &'static str,
    },
    /// An option the guard does not know comes before a placeholder.
    #[error("salve does not know option `{option}` of `{program}` (argument {position}), so it cannot tell whether the placeholder in argument {placeholder} is code or chooses the program; drop the option or the placeholder")]
    UnknownOption {
        /// Where the option is.
        position: usize,
        /// The option.
        option: String,
        /// The program.
        program: String,
        /// Where the first placeholder after it is.
        placeholder: usize,
    },
}

/// Refuses a template whose placeholders could be parsed as code or choose what runs.
/// `argv[0]` is the program, already known to have no placeholder.
pub fn check(argv: &[Element<'_>]) -> Result<(), GuardError> {
    let mut guard = Guard {
        argv,
        not_run: HashSet::new(),
        data_only: false,
    };
    guard.program(0, None)?;
    // The program reached takes every argument as data (`kubectl label node {entity}`):
    // a word like `node` there is a node, not the interpreter, and nothing runs it.
    if guard.data_only {
        return Ok(());
    }
    for (position, element) in argv.iter().enumerate().skip(1) {
        if element.placeholder || guard.not_run.contains(&position) {
            continue;
        }
        if let Some(spec) = lookup(element.text) {
            if matches!(spec.kind, Kind::Interpreter { .. } | Kind::ShellLine { .. }) {
                guard.program(position, None)?;
            }
        }
    }
    Ok(())
}

/// How an option letter or long option is used. In a spec's `short` string a letter is
/// followed by its marker; a plain letter is a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// No value.
    Flag,
    /// A value, attached (`-uroot`) or the next argument (`-u root`).
    Value,
    /// A value only when attached (`perl -i.bak`, `sed -i`): never the next argument.
    Attached,
    /// A value that is code, attached or the next argument (`python -c`, `perl -e`).
    Code,
    /// No value, but the first operand becomes code (`sh -c`).
    FirstOperandIsCode,
    /// No value, but the program's operands become a shell command line (`sudo -s`).
    ShellMode,
}

fn marker(symbol: Option<char>) -> Marker {
    match symbol {
        Some(':') => Marker::Value,
        Some('?') => Marker::Attached,
        Some('!') => Marker::Code,
        Some('@') => Marker::FirstOperandIsCode,
        Some('^') => Marker::ShellMode,
        _ => Marker::Flag,
    }
}

const MARKERS: &[char] = &[':', '?', '!', '@', '^'];

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Runs the program named after its options and `operands` fixed operands.
    Wrapper {
        /// Fixed operands before the program (`timeout 5`, `flock FILE`).
        operands: usize,
        /// Whether those operands may hold a placeholder (not `chroot`'s new root).
        operand_placeholders: bool,
        /// `NAME=value` operands come before the program (`env`).
        assignments: bool,
        /// `-c CMD` right after the fixed operands is a shell command line (`flock FILE -c`).
        shell_after_operands: bool,
        /// Only a wrapper when this subcommand follows the program (`docker exec`).
        subcommand: Option<&'static str>,
    },
    /// Reads code: the value of a code option, else its first operand (code or a script
    /// path). Its options, and everything up to that code, must be fixed.
    Interpreter {
        /// Option parsing stops at a code option (`python -c CODE -x` passes `-x` on).
        code_ends_options: bool,
        /// `+o` is an option too (shells).
        plus_options: bool,
        /// Options may follow operands, as GNU getopt allows (`sed FILE -e CODE`).
        permutes: bool,
    },
    /// Joins its operands after `operands` fixed ones (`ssh`'s destination) into a shell
    /// command line.
    ShellLine { operands: usize, how: &'static str },
    /// `runuser`: a wrapper with `-u USER`, else `su`.
    UserSwitch,
    /// `kubectl exec ... -- PROGRAM ARGS`.
    AfterDoubleDash { subcommand: &'static str },
    /// `rsync`: runs the value of some options as a program or a shell command line (`-e`,
    /// `--rsync-path`), and, before 3.2.4 and without `-s`, hands the paths of a `HOST:PATH`
    /// operand to the remote shell, which splits them. Options may follow operands.
    Rsync,
    /// `find`: its expression is code (a value there could add `-exec` or `-delete`), the
    /// value of a test such as `-name` is data, and `-exec` runs the program after it.
    Find,
    /// `git`: `-c` configuration can name programs (`core.sshCommand`), some subcommands run
    /// commands from their arguments (`submodule foreach`, `rebase --exec`), and some options
    /// name the program to run on the remote (`--upload-pack`).
    Git,
    /// `make`: a makefile is code, and so is an operand, which may be `NAME=VALUE`: make
    /// expands the value where the variable is used, and `$(shell ...)` there runs. A
    /// placeholder may only be the value of an option that names a plain file.
    Make,
    /// GNU `tar`: some options run their value (`--to-command`, `-I`, `--checkpoint-action`),
    /// a first argument without `-` is a cluster of option letters, and an archive name with a
    /// colon before its first `/` is `HOST:FILE`, reached through a remote shell. Options may
    /// follow operands.
    Tar,
}

struct Spec {
    names: &'static [&'static str],
    kind: Kind,
    /// Option letters, each followed by its marker (see [`Marker`]).
    short: &'static str,
    /// Long options, without `--`, each followed by its marker.
    long: &'static [&'static str],
}

impl Spec {
    fn short_marker(&self, letter: char) -> Option<Marker> {
        let mut chars = self.short.chars().peekable();
        while let Some(c) = chars.next() {
            let symbol = chars.peek().copied().filter(|s| MARKERS.contains(s));
            if symbol.is_some() {
                chars.next();
            }
            if c == letter {
                return Some(marker(symbol));
            }
        }
        None
    }

    fn long_marker(&self, name: &str) -> Option<Marker> {
        self.long.iter().find_map(|entry| {
            let (bare, symbol) = match entry.chars().last() {
                Some(last) if MARKERS.contains(&last) => (&entry[..entry.len() - 1], Some(last)),
                _ => (*entry, None),
            };
            (bare == name).then(|| marker(symbol))
        })
    }

    fn plus_options(&self) -> bool {
        matches!(
            self.kind,
            Kind::Interpreter {
                plus_options: true,
                ..
            }
        )
    }
}

/// A plain wrapper: runs the program named after its options.
const WRAPPER: Kind = wrapper_with(0);

/// A wrapper that takes `operands` fixed operands before the program.
const fn wrapper_with(operands: usize) -> Kind {
    Kind::Wrapper {
        operands,
        operand_placeholders: true,
        assignments: false,
        shell_after_operands: false,
        subcommand: None,
    }
}

const SHELL: Kind = Kind::Interpreter {
    code_ends_options: false,
    plus_options: true,
    permutes: false,
};
const SCRIPTING: Kind = Kind::Interpreter {
    code_ends_options: false,
    plus_options: false,
    permutes: false,
};
/// GNU tools: where unsure whether they permute, the guard reads them both ways.
const GNU_SCRIPTING: Kind = Kind::Interpreter {
    code_ends_options: false,
    plus_options: false,
    permutes: true,
};

/// The programs the guard knows. Where shells disagree on a letter, it is given the marker
/// that shifts the code further right (a value over a flag), which only ever refuses more.
#[rustfmt::skip]
const SPECS: &[Spec] = &[
    Spec {
        names: &[
            "sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "mksh", "lksh", "pdksh", "oksh",
            "yash", "posh", "fish", "csh", "tcsh",
        ],
        kind: SHELL,
        short: "c@abeghiklmnrstuvxBEHLPTo:O:C!d:D:f:p:",
        long: &[
            "norc", "noprofile", "login", "posix", "restricted", "verbose", "version", "help",
            "noediting", "interactive", "no-config", "private", "no-execute", "rcfile:",
            "init-file:", "command!", "init-command!", "debug:", "features:", "profile:",
        ],
    },
    Spec {
        names: &["python", "pypy", "jython"],
        kind: Kind::Interpreter {
            code_ends_options: true,
            plus_options: false,
            permutes: false,
        },
        short: "c!m!bBdEhiIOPqRsSuvVx3W:X:",
        long: &["help", "version", "check-hash-based-pycs:"],
    },
    Spec {
        names: &["perl"],
        kind: SCRIPTING,
        short: "e!E!I:acnpsStTuUvwWXh0?l?i?x?C?d?D?F?M!m!",
        long: &["help", "version"],
    },
    Spec {
        names: &["ruby", "jruby", "irb"],
        kind: SCRIPTING,
        short: "e!r!acdlnpsSvwyhUI:C:E:F:0?W?x?K?T?",
        long: &[
            "version", "verbose", "help", "copyright", "yydebug", "jit", "enable:", "disable:",
            "encoding:", "external-encoding:", "internal-encoding:", "dump:",
        ],
    },
    Spec {
        names: &["node", "nodejs"],
        kind: SCRIPTING,
        short: "e!p!r!cihvC:",
        long: &[
            "eval!", "print!", "require!", "import!", "loader!", "experimental-loader!", "check",
            "interactive", "version", "help", "no-warnings", "no-deprecation", "trace-warnings",
            "enable-source-maps", "conditions:", "input-type:", "title:",
        ],
    },
    Spec {
        names: &["php"],
        kind: SCRIPTING,
        short: "r!B!R!F!E!f!aCehHiIlmnqsvwc:d:z:t:S:",
        long: &["help", "version", "php-ini:", "define:", "file!", "run!"],
    },
    Spec {
        names: &["lua", "luajit"],
        kind: SCRIPTING,
        short: "e!l!ivEW",
        long: &[],
    },
    Spec {
        names: &["tclsh", "wish", "Rscript", "osascript", "expect"],
        kind: SCRIPTING,
        short: "e!c!",
        long: &["vanilla", "verbose", "no-environ", "default-packages:"],
    },
    Spec {
        names: &["awk", "gawk", "mawk", "nawk", "original-awk"],
        kind: GNU_SCRIPTING,
        short: "f!e!i!l!E!F:v:W:bcCgMNOPrsStVhnd?D?L?o?p?",
        long: &[
            "file!", "source!", "include!", "load!", "exec!", "field-separator:", "assign:",
            "posix", "traditional", "sandbox", "characters-as-bytes", "re-interval", "lint?",
            "optimize", "no-optimize", "bignum", "version", "help",
        ],
    },
    Spec {
        names: &["sed", "gsed"],
        kind: GNU_SCRIPTING,
        short: "e!f!nrEsuzbl:i?",
        long: &[
            "expression!", "file!", "in-place?", "line-length:", "quiet", "silent",
            "regexp-extended", "separate", "unbuffered", "null-data", "zero-terminated", "posix",
            "debug", "sandbox", "follow-symlinks", "help", "version",
        ],
    },
    Spec {
        names: &["ssh"],
        kind: Kind::ShellLine {
            operands: 1,
            how:
                "joins its arguments after the destination into a command line for the remote shell",
        },
        short: "46AaCfGgKkMNnqsTtVvXxYyB:b:c:D:E:e:F:I:i:J:L:l:m:O:o:P:p:Q:R:S:W:w:",
        long: &[],
    },
    Spec {
        names: &["su", "script", "watch", "parallel", "pwsh", "powershell", "tmux", "screen"],
        kind: Kind::ShellLine {
            operands: 0,
            how: "hands its arguments to a shell as a command line",
        },
        short: "",
        long: &[],
    },
    Spec {
        names: &["runuser"],
        kind: Kind::UserSwitch,
        short: "u:g:G:w:s:c!lmpfP",
        long: &[
            "user:", "group:", "supp-group:", "login", "preserve-environment", "shell:",
            "command!", "session-command!", "fast", "pty", "whitelist-environment:",
        ],
    },
    Spec {
        names: &["sudo"],
        kind: WRAPPER,
        short: "s^i^AbEHKknPSVu:g:C:D:h:p:R:r:T:t:U:",
        long: &[
            "shell^", "login^", "user:", "group:", "close-from:", "chdir:", "chroot:", "host:",
            "prompt:", "role:", "type:", "command-timeout:", "other-user:", "preserve-env?",
            "askpass", "background", "set-home", "non-interactive", "preserve-groups", "stdin",
            "reset-timestamp", "remove-timestamp",
        ],
    },
    Spec {
        names: &["doas"],
        kind: WRAPPER,
        short: "s^nu:",
        long: &[],
    },
    Spec {
        names: &["env"],
        kind: Kind::Wrapper {
            operands: 0,
            operand_placeholders: true,
            assignments: true,
            shell_after_operands: false,
            subcommand: None,
        },
        short: "S!i0vu:C:",
        long: &[
            "split-string!", "ignore-environment", "null", "unset:", "chdir:", "debug",
            "default-signal?", "ignore-signal?", "block-signal?", "list-signal-handling",
        ],
    },
    Spec {
        names: &["nice"],
        kind: WRAPPER,
        short: "n:0123456789",
        long: &["adjustment:"],
    },
    Spec {
        names: &["ionice"],
        kind: WRAPPER,
        short: "c:n:t",
        long: &["class:", "classdata:", "ignore"],
    },
    Spec {
        names: &["nohup", "busybox", "toybox"],
        kind: WRAPPER,
        short: "",
        long: &[],
    },
    Spec {
        names: &["timeout"],
        kind: wrapper_with(1),
        short: "s:k:v",
        long: &["signal:", "kill-after:", "foreground", "preserve-status", "verbose"],
    },
    Spec {
        names: &["stdbuf"],
        kind: WRAPPER,
        short: "i:o:e:",
        long: &["input:", "output:", "error:"],
    },
    Spec {
        names: &["setsid"],
        kind: WRAPPER,
        short: "cfw",
        long: &["ctty", "fork", "wait"],
    },
    Spec {
        names: &["time"],
        kind: WRAPPER,
        short: "f:o:apqv",
        long: &["format:", "output:", "append", "portability", "quiet", "verbose"],
    },
    Spec {
        names: &["chroot"],
        kind: Kind::Wrapper {
            operands: 1,
            operand_placeholders: false,
            assignments: false,
            shell_after_operands: false,
            subcommand: None,
        },
        short: "",
        long: &["userspec:", "groups:", "skip-chdir"],
    },
    Spec {
        names: &["xargs"],
        kind: WRAPPER,
        short: "0oprtxa:d:E:I:L:n:P:s:e?i?l?",
        long: &[
            "null", "arg-file:", "delimiter:", "eof?", "replace?", "max-lines?", "max-args:",
            "max-procs:", "interactive", "no-run-if-empty", "max-chars:", "verbose", "exit",
            "show-limits", "open-tty", "process-slot-var:",
        ],
    },
    Spec {
        names: &["flock"],
        kind: Kind::Wrapper {
            operands: 1,
            operand_placeholders: true,
            assignments: false,
            shell_after_operands: true,
            subcommand: None,
        },
        short: "c!sxenouFw:E:",
        long: &[
            "command!", "shared", "exclusive", "unlock", "nonblock", "close", "no-fork", "verbose",
            "timeout:", "wait:", "conflict-exit-code:",
        ],
    },
    Spec {
        names: &["nsenter"],
        kind: WRAPPER,
        short: "aFZt:S:G:m?u?i?n?p?U?C?T?r?w?",
        long: &[],
    },
    Spec {
        names: &["unshare"],
        kind: WRAPPER,
        short: "frcm?u?i?n?p?U?C?T?R:w:S:G:",
        long: &[],
    },
    Spec {
        names: &["docker", "podman", "nerdctl"],
        kind: Kind::Wrapper {
            operands: 1,
            operand_placeholders: true,
            assignments: false,
            shell_after_operands: false,
            subcommand: Some("exec"),
        },
        short: "dite:u:w:",
        long: &[
            "detach", "interactive", "tty", "privileged", "env:", "env-file:", "user:", "workdir:",
            "detach-keys:",
        ],
    },
    Spec {
        names: &["kubectl", "oc"],
        kind: Kind::AfterDoubleDash { subcommand: "exec" },
        short: "",
        long: &[],
    },
    Spec {
        names: &["find"],
        kind: Kind::Find,
        short: "",
        long: &[],
    },
    Spec {
        names: &["make", "gmake"],
        kind: Kind::Make,
        // `-C` and `-I` choose where makefiles are read from, so they are code too.
        short: "bBdeikLnpqrRsStvwC!f!I!E!o:W:j?l?O?",
        long: &[
            "always-make", "directory!", "debug?", "environment-overrides", "eval!", "file!",
            "makefile!", "help", "ignore-errors", "include-dir!", "jobs?", "keep-going",
            "load-average?", "max-load?", "check-symlink-times", "just-print", "dry-run", "recon",
            "old-file:", "assume-old:", "output-sync?", "print-data-base", "question",
            "no-builtin-rules", "no-builtin-variables", "silent", "quiet", "no-silent",
            "no-keep-going", "stop", "touch", "trace", "version", "print-directory",
            "no-print-directory", "what-if:", "new-file:", "assume-new:",
            "warn-undefined-variables", "shuffle?",
        ],
    },
    Spec {
        names: &["tar", "gtar"],
        kind: Kind::Tar,
        // `-I` is the compression program and `-F` the end-of-volume script: both run.
        short: "AcdrtuxajJzZvpsknUmOPhlSWwBiGMRoI!F!b:C:f:g:H:K:L:N:T:V:X:",
        long: &[
            "catenate", "concatenate", "create", "diff", "compare", "delete", "append", "list",
            "test-label", "update", "extract", "get", "show-defaults", "help", "usage",
            "version", "auto-compress", "no-auto-compress", "bzip2", "xz", "lzip", "lzma",
            "lzop", "zstd", "gzip", "gunzip", "ungzip", "compress", "uncompress", "verbose",
            "preserve-permissions", "same-permissions", "no-same-permissions",
            "preserve-order", "same-order", "keep-old-files", "keep-newer-files",
            "skip-old-files", "keep-directory-symlink", "unlink-first", "recursive-unlink",
            "overwrite", "overwrite-dir", "no-overwrite-dir", "touch", "to-stdout",
            "numeric-owner", "same-owner", "no-same-owner", "absolute-names", "dereference",
            "hard-dereference", "check-links", "sparse", "verify", "interactive",
            "confirmation", "read-full-records", "ignore-zeros", "incremental",
            "multi-volume", "block-number", "remove-files", "ignore-failed-read",
            "ignore-command-error", "no-ignore-command-error", "recursion", "no-recursion",
            "anchored", "no-anchored", "ignore-case", "no-ignore-case", "wildcards",
            "no-wildcards", "wildcards-match-slash", "no-wildcards-match-slash",
            "exclude-backups", "exclude-caches", "exclude-caches-all", "exclude-caches-under",
            "exclude-vcs", "exclude-vcs-ignores", "null", "no-null", "unquote", "no-unquote",
            "verbatim-files-from", "no-verbatim-files-from", "force-local", "seek", "no-seek",
            "check-device", "no-check-device", "delay-directory-restore",
            "no-delay-directory-restore", "restrict", "utc", "full-time",
            "show-omitted-dirs", "show-transformed-names", "show-stored-names",
            "show-snapshot-field-ranges", "posix",
            "old-archive", "portability", "acls", "no-acls", "selinux", "no-selinux",
            "xattrs", "no-xattrs", "one-file-system", "one-top-level?", "totals?",
            "checkpoint?", "backup?", "occurrence?", "atime-preserve?",
            "blocking-factor:", "record-size:", "directory:", "file:", "listed-incremental:",
            "level:", "format:", "starting-file:", "tape-length:", "newer:", "after-date:",
            "newer-mtime:", "files-from:", "label:", "exclude-from:", "exclude:",
            "exclude-tag:", "exclude-tag-all:", "exclude-tag-under:", "exclude-ignore:",
            "exclude-ignore-recursive:", "add-file:", "transform:", "xform:",
            "strip-components:", "owner:", "group:", "owner-map:", "group-map:", "mode:",
            "mtime:", "clamp-mtime", "sort:", "suffix:", "index-file:", "volno-file:",
            "sparse-version:", "hole-detection:", "quoting-style:", "quote-chars:",
            "no-quote-chars:", "warning:", "pax-option:", "xattrs-include:", "xattrs-exclude:",
            "use-compress-program!", "to-command!", "info-script!", "new-volume-script!",
            "rsh-command!", "rmt-command!", "checkpoint-action!",
        ],
    },
    Spec {
        names: &["git"],
        kind: Kind::Git,
        short: "",
        long: &[],
    },
    Spec {
        names: &["rsync"],
        kind: Kind::Rsync,
        // `-e` is the remote shell's command line, `-M` an option for the remote rsync
        // (which may be `--rsync-path`): both code.
        short: "vqcarRbudlLkKHpEAXogDtUNOJSnWxyzCFhPi8460sme!M!B:f:T:",
        long: &[
            "verbose", "info:", "debug:", "stderr:", "quiet", "no-motd", "checksum", "archive",
            "recursive", "no-recursive", "relative", "no-relative", "no-implied-dirs", "backup",
            "backup-dir:", "suffix:", "update", "inplace", "append", "append-verify", "dirs",
            "mkpath", "links", "copy-links", "copy-unsafe-links", "safe-links", "munge-links",
            "copy-dirlinks", "keep-dirlinks", "hard-links", "perms", "no-perms", "executability",
            "chmod:", "acls", "xattrs", "owner", "no-owner", "group", "no-group", "devices",
            "specials", "times", "no-times", "atimes", "crtimes", "omit-dir-times",
            "omit-link-times", "super", "fake-super", "sparse", "preallocate", "dry-run",
            "whole-file", "no-whole-file", "checksum-choice:", "one-file-system", "block-size:",
            "rsh!", "rsync-path!", "remote-option!", "existing", "ignore-existing",
            "remove-source-files", "del", "delete", "delete-before", "delete-during",
            "delete-delay", "delete-after", "delete-excluded", "ignore-missing-args",
            "delete-missing-args", "ignore-errors", "force", "max-delete:", "max-size:",
            "min-size:", "partial", "partial-dir:", "delay-updates", "prune-empty-dirs",
            "numeric-ids", "usermap:", "groupmap:", "chown:", "timeout:", "contimeout:",
            "ignore-times", "size-only", "modify-window:", "temp-dir:", "fuzzy", "compare-dest:",
            "copy-dest:", "link-dest:", "compress", "no-compress", "compress-choice:",
            "compress-level:", "skip-compress:", "cvs-exclude", "filter:", "exclude:",
            "exclude-from:", "include:", "include-from:", "files-from:", "from0",
            "protect-args", "secluded-args", "address:", "port:", "blocking-io", "stats",
            "human-readable", "progress", "itemize-changes", "out-format:", "log-file:",
            "log-file-format:", "password-file:", "list-only", "bwlimit:", "fsync", "ipv4",
            "ipv6", "version", "help",
        ],
    },
];

/// git's global options that take a value that is data (a path, a namespace).
#[rustfmt::skip]
const GIT_DATA_OPTIONS: &[&str] = &[
    "-C", "--git-dir", "--work-tree", "--namespace", "--attr-source", "--list-cmds",
];

/// git's global flags.
#[rustfmt::skip]
const GIT_FLAGS: &[&str] = &[
    "--bare", "--no-pager", "-p", "--paginate", "-P", "--no-replace-objects", "--no-lazy-fetch",
    "--literal-pathspecs", "--glob-pathspecs", "--noglob-pathspecs", "--icase-pathspecs",
    "--no-optional-locks", "--no-advice", "--exec-path", "--html-path", "--man-path",
    "--info-path", "--version", "-v", "--help", "-h",
];

/// git subcommands that run commands given in their arguments, or write configuration that
/// names programs: no placeholder anywhere in them.
#[rustfmt::skip]
const GIT_RUNS_ARGUMENTS: &[&str] = &[
    "submodule", "rebase", "bisect", "filter-branch", "filter-repo", "config", "daemon",
    "difftool", "mergetool", "send-email", "instaweb", "credential", "archive", "grep", "help",
    "shell", "upload-pack", "receive-pack", "remote-ext", "web--browse", "var", "alias", "hook",
    "submodule--helper",
];

/// Flags of the other subcommands that take no value, so that a placeholder after one is an
/// operand. git also takes clusters, attached values and unique prefixes of long options
/// (`-u{x}`, `--upload={x}` for `--upload-pack`), so any other option before a placeholder
/// may be the one that names a program.
#[rustfmt::skip]
const GIT_SUBCOMMAND_FLAGS: &[&str] = &[
    "--hard", "--soft", "--mixed", "--keep", "--merge", "--ff-only", "--no-ff", "--ff",
    "--rebase", "--no-rebase", "--force", "-f", "--quiet", "-q", "--verbose", "-v", "--prune",
    "--all", "--tags", "--no-tags", "--detach", "--no-edit", "--autostash",
];

/// Environment variables that a program loads or runs code from (`LD_PRELOAD`,
/// `GIT_SSH_COMMAND`, `BASH_ENV`), or that pick where it finds its programs and configuration
/// (`PATH`, `HOME`): a value there is code.
fn code_variable(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "XDG_CONFIG_HOME",
        "XDG_CONFIG_DIRS",
        "BASH_ENV",
        "ENV",
        "PS4",
        "PROMPT_COMMAND",
        "SHELLOPTS",
        "BASHOPTS",
        "IFS",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "MANPAGER",
        "LESSOPEN",
        "LESSCLOSE",
        "BROWSER",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "NODE_PATH",
        "RUBYOPT",
        "RUBYLIB",
        "KUBECONFIG",
        "DOCKER_CONFIG",
        "DOCKER_HOST",
        "SSH_AUTH_SOCK",
        // tar reads options from the one (`--to-command`), and its archive from the other.
        "TAR_OPTIONS",
        "TAPE",
    ];
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "GIT_", "BASH_FUNC_", "RSYNC_", "GCONV_"];
    NAMES.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// How to hand a value to what a makefile does instead.
const MAKE_ADVICE: &str = "keep make's arguments fixed, and pass the value to a script as an argument (`/opt/deploy.sh {entity}`), where no makefile expands it";

/// How to pass a value to code instead of splicing it in.
const SCRIPT_ADVICE: &str = "keep it fixed and pass values as arguments after the script (a shell script reads them as \"$1\", \"$2\"...)";

/// How to hand a value to tar instead.
const TAR_ADVICE: &str = "keep it fixed; a value may be a member name, or the value of an option that names a file or directory (`-C /srv/{entity}`)";

/// An option's name, without an attached `=value`.
fn option_name(text: &str) -> &str {
    text.split_once('=').map_or(text, |(name, _)| name)
}

/// A starting point of `find` that begins with a placeholder.
const STARTING_POINT: &str = "a starting point that begins with a value";

/// How many values follow a test or action of `find` (`-name PATTERN`, `-fprintf FILE FMT`).
fn find_values(primary: &str) -> usize {
    const ONE: &[&str] = &[
        "-name",
        "-iname",
        "-path",
        "-ipath",
        "-wholename",
        "-iwholename",
        "-regex",
        "-iregex",
        "-lname",
        "-ilname",
        "-regextype",
        "-user",
        "-group",
        "-uid",
        "-gid",
        "-size",
        "-perm",
        "-type",
        "-xtype",
        "-mtime",
        "-mmin",
        "-atime",
        "-amin",
        "-ctime",
        "-cmin",
        "-used",
        "-newer",
        "-anewer",
        "-cnewer",
        "-samefile",
        "-inum",
        "-links",
        "-fstype",
        "-context",
        "-maxdepth",
        "-mindepth",
        "-printf",
        "-fprint",
        "-fprint0",
        "-fls",
        "-files0-from",
    ];
    if primary == "-fprintf" {
        2
    } else if ONE.contains(&primary)
        // `-newerXY REFERENCE`, e.g. `-newermt 2024-01-01`.
        || (primary.len() == 8 && primary.starts_with("-newer"))
    {
        1
    } else {
        0
    }
}

/// The spec for a program, by its file name without a version suffix (`python3.12`).
fn lookup(program: &str) -> Option<&'static Spec> {
    let file = program.rsplit('/').next().unwrap_or(program);
    let name = file.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let name = if name.is_empty() { file } else { name };
    SPECS.iter().find(|spec| spec.names.contains(&name))
}

/// What an option element is to its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Flag,
    Value,
    Code,
}

/// A program's arguments, split into options and operands.
#[derive(Debug, Default)]
struct Parsed {
    options: Vec<(usize, Role)>,
    operands: Vec<usize>,
    /// A code option gave the code: the operands are data.
    code_option: bool,
    /// `sh -c`: the first operand is code.
    first_operand_is_code: bool,
    shell_mode: bool,
    /// Long names and letters used, for `runuser -u`.
    used: Vec<String>,
    /// Where each option value is (attached to its option, or the next argument), and the
    /// option's long name or letter.
    values: Vec<(usize, String)>,
    /// The first option the spec does not know, and its text.
    unknown: Option<(usize, String)>,
}

struct Guard<'a, 'b> {
    argv: &'a [Element<'b>],
    /// Arguments that name a program without running it: the `$0` of `sh -c SCRIPT NAME`
    /// (by convention the shell's name), and option values that a program has already been
    /// checked for (`rsync -e ssh`).
    not_run: HashSet<usize>,
    /// The program reached from argument 0 is known to take all its arguments as data.
    data_only: bool,
}

impl Guard<'_, '_> {
    fn text(&self, position: usize) -> String {
        self.argv[position].text.to_owned()
    }

    fn first_placeholder(&self, from: usize) -> Option<usize> {
        self.placeholder_in(from, self.argv.len())
    }

    /// The first placeholder among arguments `from` to `to`, both included, as far as they go.
    fn placeholder_in(&self, from: usize, to: usize) -> Option<usize> {
        (from..self.argv.len().min(to.saturating_add(1))).find(|&i| self.argv[i].placeholder)
    }

    /// Checks the program at `position`, run by `runner` if a wrapper runs it.
    fn program(&mut self, position: usize, runner: Option<&str>) -> Result<(), GuardError> {
        let Some(element) = self.argv.get(position).copied() else {
            return Ok(());
        };
        if let (true, Some(runner)) = (element.placeholder, runner) {
            return Err(GuardError::ChosenProgram {
                position,
                text: element.text.to_owned(),
                runner: runner.to_owned(),
            });
        }
        let Some(spec) = lookup(element.text) else {
            return Ok(());
        };
        let name = element.text;
        match spec.kind {
            Kind::Interpreter {
                code_ends_options,
                permutes,
                ..
            } => {
                // A GNU parser also takes options after the operands: check both readings.
                let readings: &[bool] = if permutes { &[false, true] } else { &[false] };
                for &permute in readings {
                    let parsed = self.parse(spec, position + 1, permute, code_ends_options);
                    self.interpreter(name, &parsed)?;
                }
                Ok(())
            }
            Kind::ShellLine { operands, how } => {
                let first = if operands == 0 {
                    position + 1
                } else {
                    let parsed = self.parse(spec, position + 1, false, false);
                    self.refuse_unknown(name, &parsed)?;
                    self.refuse_in_options(name, &parsed, |_| false)?;
                    match parsed.operands.get(operands) {
                        Some(&first) => first,
                        None => return Ok(()),
                    }
                };
                self.refuse_shell_line(name, first, how)
            }
            Kind::UserSwitch => {
                let parsed = self.parse(spec, position + 1, false, false);
                if parsed.used.iter().any(|u| u == "u" || u == "user") {
                    self.wrapper(name, WRAPPER, &parsed)
                } else {
                    self.refuse_shell_line(
                        name,
                        position + 1,
                        "without -u hands its arguments to a shell, as su does",
                    )
                }
            }
            Kind::Wrapper { subcommand, .. } => {
                let mut from = position + 1;
                if let Some(subcommand) = subcommand {
                    // Global options (`--context x`) or a group (`container`) may come first,
                    // as kubectl's `exec` is looked for anywhere too.
                    let found = self.argv[from..].iter().position(|e| e.text == subcommand);
                    let Some(at) = found else {
                        return Ok(());
                    };
                    from += at + 1;
                }
                let parsed = self.parse(spec, from, false, false);
                self.wrapper(name, spec.kind, &parsed)
            }
            Kind::Rsync => {
                // An unknown option may undo what came before it (`--no-s`, `--old-args`).
                let parsed = self.permuted_options(spec, name, position + 1)?;
                self.not_run
                    .extend(parsed.options.iter().map(|&(position, _)| position));
                // Any operand can become `HOST:PATH`, since a value may hold a colon.
                let protected = parsed
                    .used
                    .iter()
                    .any(|u| matches!(u.as_str(), "s" | "protect-args" | "secluded-args"));
                match parsed.operands.iter().find(|&&i| self.argv[i].placeholder) {
                    Some(&operand) if !protected => Err(GuardError::ShellLine {
                        position: operand,
                        text: self.text(operand),
                        program: name.to_owned(),
                        how: "hands the paths of a HOST:PATH operand to the remote shell, which splits them (rsync before 3.2.4), unless `-s`/`--protect-args` is given; add it",
                    }),
                    _ => Ok(()),
                }
            }
            Kind::Find => self.find(position),
            Kind::Tar => self.tar(spec, position),
            Kind::Git => self.git(position),
            Kind::Make => {
                let parsed = self.permuted_options(spec, name, position + 1)?;
                match parsed.operands.iter().find(|&&i| self.argv[i].placeholder) {
                    Some(&operand) => Err(GuardError::Code {
                        position: operand,
                        text: self.text(operand),
                        program: name.to_owned(),
                        what: "an operand (a target, or `NAME=VALUE`: a value may hold `=`, and make expands a variable's value where it is used)",
                        fix: MAKE_ADVICE,
                    }),
                    None => Ok(()),
                }
            }
            Kind::AfterDoubleDash { subcommand } => {
                let args = &self.argv[position + 1..];
                let dashes = args.iter().position(|e| e.text == "--");
                let Some(exec) = args.iter().position(|e| e.text == subcommand) else {
                    // Without `--`, every argument is kubectl's own. After one, `kubectl run`
                    // or `debug` may run it: the arguments are checked as they stand.
                    self.data_only = dashes.is_none();
                    return Ok(());
                };
                match dashes {
                    Some(dashes) if dashes > exec => {
                        self.program(position + 1 + dashes + 1, Some(name))
                    }
                    _ => self.refuse_unknown_option(
                        name,
                        position + 1 + exec,
                        subcommand,
                        position + 1 + exec + 1,
                    ),
                }
            }
        }
    }

    /// `find [-H|-L|-P|-D OPTS|-OLEVEL] [STARTING POINTS] [EXPRESSION]`. A placeholder may
    /// be the value of a test, or a starting point with a fixed beginning; anywhere else in
    /// the expression a value could add `-exec` or `-delete`.
    fn find(&mut self, position: usize) -> Result<(), GuardError> {
        let mut i = position + 1;
        while let Some(element) = self.argv.get(i) {
            let text = element.text;
            let own = matches!(text, "-H" | "-L" | "-P" | "-D") || text.starts_with("-O");
            if !own {
                break;
            }
            let end = if text == "-D" { i + 1 } else { i };
            if let Some(at) = self.placeholder_in(i, end) {
                return Err(self.refused_by_find(at, "an option"));
            }
            i = end + 1;
        }
        let starts_expression =
            |text: &str| text.starts_with('-') || matches!(text, "(" | ")" | "!" | ",");
        while let Some(element) = self.argv.get(i) {
            if starts_expression(element.text) {
                break;
            }
            if element.placeholder && element.text.starts_with('{') {
                return Err(self.refused_by_find(i, STARTING_POINT));
            }
            i += 1;
        }
        while let Some(element) = self.argv.get(i) {
            if element.placeholder {
                return Err(self.refused_by_find(i, "part of the expression"));
            }
            if matches!(element.text, "-exec" | "-execdir" | "-ok" | "-okdir") {
                self.found_file_as_code(i + 1)?;
                self.program(i + 1, Some("find"))?;
                // The program's arguments are data to find, and checked as the program's own
                // above.
                i = self.exec_end(i + 1) + 1;
                continue;
            }
            // A test's value is a pattern or a name (`-name sh`), never run.
            let values = find_values(element.text);
            self.not_run.extend(i + 1..=i + values);
            i += 1 + values;
        }
        Ok(())
    }

    /// `tar [LETTERS] [OPTIONS] [FILES]`: options that run their value are code, and so is
    /// a first argument without `-`, which GNU tar reads as option letters whose values are
    /// the next arguments, in order (`tar czf ARCHIVE DIR`). An archive name may hold a
    /// placeholder only after a fixed `/`, or with `--force-local`: with a colon before its
    /// first `/` it is `[USER@]HOST:FILE`, which tar reaches through a remote shell.
    fn tar(&mut self, spec: &Spec, position: usize) -> Result<(), GuardError> {
        let name = self.argv[position].text;
        let mut archives = Vec::new();
        let mut from = position + 1;
        if let Some(first) = self.argv.get(from).copied() {
            if !first.text.starts_with('-') {
                if first.placeholder {
                    return Err(GuardError::Code {
                        position: from,
                        text: first.text.to_owned(),
                        program: name.to_owned(),
                        what: "the first argument, which tar reads as option letters when it does not start with `-`",
                        fix: TAR_ADVICE,
                    });
                }
                let mut value = from + 1;
                for letter in first.text.chars() {
                    match spec.short_marker(letter) {
                        Some(Marker::Flag) => {}
                        Some(marker) => {
                            let placeholder = self.argv.get(value).is_some_and(|e| e.placeholder);
                            if marker == Marker::Code && placeholder {
                                return Err(GuardError::Code {
                                    position: value,
                                    text: self.text(value),
                                    program: name.to_owned(),
                                    what: "the value of an option that runs it",
                                    fix: TAR_ADVICE,
                                });
                            }
                            if letter == 'f' {
                                archives.push(value);
                            }
                            value += 1;
                        }
                        None => {
                            return self.refuse_unknown_option(
                                name,
                                from,
                                &letter.to_string(),
                                from,
                            )
                        }
                    }
                }
                from = value;
            }
        }
        let parsed = self.permuted_options(spec, name, from)?;
        archives.extend(
            parsed
                .values
                .iter()
                .filter(|(_, option)| matches!(option.as_str(), "f" | "file"))
                .map(|&(at, _)| at),
        );
        if parsed.used.iter().any(|u| u == "force-local") {
            return Ok(());
        }
        for at in archives {
            let Some(element) = self.argv.get(at) else {
                continue;
            };
            if element.placeholder && !element.lead.contains('/') {
                return Err(GuardError::ShellLine {
                    position: at,
                    text: self.text(at),
                    program: name.to_owned(),
                    how: "reaches an archive named `[USER@]HOST:FILE` through a remote shell, and a value could put a colon before the first `/`; begin the name with a fixed directory (`/srv/backups/{entity}.tar`) or add `--force-local`",
                });
            }
        }
        Ok(())
    }

    /// `git [GLOBAL OPTIONS] SUBCOMMAND [ARGS]`: global option values that are paths may hold
    /// a placeholder, `-c` values may not; the subcommand is fixed; the subcommands that run
    /// their arguments take none; elsewhere no placeholder in an option that names a program.
    fn git(&mut self, position: usize) -> Result<(), GuardError> {
        let code = |guard: &Self, at: usize, what: &'static str| {
            GuardError::Code {
            position: at,
            text: guard.text(at),
            program: "git".to_owned(),
            what,
            fix: "keep it fixed; values may be operands, such as a revision, a remote, or a path under a fixed directory",
        }
        };
        let mut i = position + 1;
        let mut configured = false;
        while let Some(element) = self.argv.get(i) {
            let text = element.text;
            if !text.starts_with('-') || text == "--" {
                break;
            }
            let name = option_name(text);
            if matches!(name, "-c" | "--config-env") {
                configured = true;
                // `-c core.sshCommand=...`: the value may name a program.
                let value = if text.contains('=') && name == "--config-env" {
                    i
                } else {
                    i + 1
                };
                if let Some(at) = self.placeholder_in(i, value) {
                    return Err(code(
                        self,
                        at,
                        "a `-c` configuration setting (one can name a program: core.sshCommand, core.pager)",
                    ));
                }
                i = value + 1;
            } else if GIT_DATA_OPTIONS.contains(&name) {
                // A repository's configuration can name programs (core.fsmonitor): the value
                // may only extend a fixed directory, which the runtime keeps `..` out of.
                let (at, value) = match text.split_once('=') {
                    Some((_, value)) => (i, value),
                    None => (i + 1, self.argv.get(i + 1).map_or("", |e| e.text)),
                };
                if self.argv.get(at).is_some_and(|e| e.placeholder) && value.starts_with('{') {
                    return Err(code(
                        self,
                        at,
                        "a repository path that begins with a value (begin it with a fixed directory, such as `/srv/repos/{entity}`)",
                    ));
                }
                i = at + 1;
            } else if GIT_FLAGS.contains(&name) {
                if element.placeholder {
                    return Err(code(self, i, "an option"));
                }
                i += 1;
            } else {
                return self.refuse_unknown_option("git", i, text, i);
            }
        }
        if self.argv.get(i).is_some_and(|e| e.text == "--") {
            i += 1;
        }
        let Some(subcommand) = self.argv.get(i).copied() else {
            return Ok(());
        };
        if subcommand.placeholder {
            return Err(GuardError::ChosenProgram {
                position: i,
                text: subcommand.text.to_owned(),
                runner: "git".to_owned(),
            });
        }
        if GIT_RUNS_ARGUMENTS.contains(&subcommand.text) {
            return self.refuse_shell_line(
                "git",
                i + 1,
                "runs commands given in the arguments of this subcommand, or writes configuration that names them",
            );
        }
        for at in i + 1..self.argv.len() {
            let element = self.argv[at];
            if element.text == "--" && !element.placeholder {
                // Pathspecs from here on.
                break;
            }
            if !element.placeholder {
                continue;
            }
            if configured {
                return Err(code(
                    self,
                    at,
                    "an argument after `-c` settings (they can make git run a value: protocol.ext.allow, alias.*)",
                ));
            }
            let previous = self.argv[at - 1].text;
            let operand = !element.text.starts_with('-')
                && (at == i + 1
                    || !previous.starts_with('-')
                    || GIT_SUBCOMMAND_FLAGS.contains(&previous));
            if !operand {
                return Err(code(
                    self,
                    at,
                    "an option, or the value of one, that salve does not know to take data (it could name a program: `--upload-pack`, `-u`, `--exec`, `--template`)",
                ));
            }
        }
        Ok(())
    }

    /// With a placeholder anywhere, which may steer what find finds, a found file (`{}`)
    /// may not be the program `-exec` runs, nor be spliced into a shell's or interpreter's
    /// code (`sh -c 'rm {}'`); `sh -c 'rm "$1"' sh {}` passes it as data.
    fn found_file_as_code(&self, program: usize) -> Result<(), GuardError> {
        if self.first_placeholder(0).is_none() {
            return Ok(());
        }
        let Some(element) = self.argv.get(program) else {
            return Ok(());
        };
        let reads_code = lookup(element.text).is_some_and(|spec| {
            matches!(spec.kind, Kind::Interpreter { .. } | Kind::ShellLine { .. })
        });
        for at in program..self.exec_end(program) {
            let text = self.argv[at].text;
            let spliced = text.contains("{{}}") && text != "{{}}";
            if (at == program && text.contains("{{}}")) || (reads_code && spliced) {
                return Err(GuardError::FindExpression {
                    position: at,
                    text: self.text(at),
                    what: "a found file run as a program or spliced into code",
                    fix: "with a value choosing where find looks, pass the file as an argument: `-exec sh -c '... \"$1\"' sh {{}} ;`",
                });
            }
        }
        Ok(())
    }

    /// Where the arguments of the program that find's `-exec` runs from `program` end: at the
    /// `;` or `+` after them, else at the end of the template.
    fn exec_end(&self, program: usize) -> usize {
        self.argv[program.min(self.argv.len())..]
            .iter()
            .position(|e| !e.placeholder && matches!(e.text, ";" | "+"))
            .map_or(self.argv.len(), |at| program + at)
    }

    fn refused_by_find(&self, position: usize, what: &'static str) -> GuardError {
        let fix = match what {
            STARTING_POINT => "begin it with fixed text, such as `./` or `/srv/`",
            _ => "keep it fixed, or make it the value of a test such as `-name {entity}`",
        };
        GuardError::FindExpression {
            position,
            text: self.text(position),
            what,
            fix,
        }
    }

    fn interpreter(&mut self, name: &str, parsed: &Parsed) -> Result<(), GuardError> {
        self.refuse_unknown(name, parsed)?;
        self.refuse_in_options(name, parsed, |_| false)?;
        if parsed.code_option && !parsed.first_operand_is_code {
            return Ok(());
        }
        let Some(&first) = parsed.operands.first() else {
            return Ok(());
        };
        if parsed.first_operand_is_code {
            self.not_run.insert(first + 1);
        }
        if self.argv[first].placeholder {
            return Err(GuardError::Code {
                position: first,
                text: self.text(first),
                program: name.to_owned(),
                what: if parsed.first_operand_is_code {
                    "the code"
                } else {
                    "the script (or program text)"
                },
                fix: SCRIPT_ADVICE,
            });
        }
        Ok(())
    }

    /// Checks a wrapper's own arguments, then the program it runs.
    fn wrapper(&mut self, name: &str, kind: Kind, parsed: &Parsed) -> Result<(), GuardError> {
        let Kind::Wrapper {
            operands,
            operand_placeholders,
            assignments,
            shell_after_operands,
            ..
        } = kind
        else {
            return Ok(());
        };
        self.refuse_unknown(name, parsed)?;
        // A wrapper's option values are data to it (`sudo -u {params.user}`); code is not.
        self.refuse_in_options(name, parsed, |role| role == Role::Value)?;
        let Some(&start) = parsed.operands.first() else {
            return Ok(());
        };
        if parsed.shell_mode {
            return self.refuse_shell_line(
                name,
                start,
                "runs its arguments through a shell in this mode",
            );
        }
        let mut next = start;
        if assignments {
            while let Some(element) = self.argv.get(next) {
                match element.text.split_once('=') {
                    Some((variable, _)) if !variable.is_empty() && !variable.contains('{') => {
                        if element.placeholder && code_variable(variable) {
                            return Err(GuardError::Code {
                                position: next,
                                text: self.text(next),
                                program: name.to_owned(),
                                what: "an environment variable that programs load or run code from",
                                fix: "keep it fixed, and pass the value in a variable of your own or as an argument",
                            });
                        }
                        next += 1;
                    }
                    _ => break,
                }
            }
        }
        for fixed in next..(next + operands).min(self.argv.len()) {
            if !operand_placeholders && self.argv[fixed].placeholder {
                return Err(GuardError::ChosenProgram {
                    position: fixed,
                    text: self.text(fixed),
                    runner: name.to_owned(),
                });
            }
        }
        next += operands;
        if shell_after_operands {
            if let Some(flag) = self.argv.get(next) {
                if flag.text == "-c" || flag.text == "--command" {
                    return self.refuse_shell_line(
                        name,
                        next + 1,
                        "runs the argument after -c through a shell",
                    );
                }
            }
        }
        self.program(next, Some(name))
    }

    fn refuse_unknown(&self, name: &str, parsed: &Parsed) -> Result<(), GuardError> {
        match &parsed.unknown {
            Some((position, option)) => {
                self.refuse_unknown_option(name, *position, option, *position)
            }
            None => Ok(()),
        }
    }

    /// Refuses an option salve does not know, `option` at `position`, when a placeholder
    /// comes at `from` or after it.
    fn refuse_unknown_option(
        &self,
        name: &str,
        position: usize,
        option: &str,
        from: usize,
    ) -> Result<(), GuardError> {
        match self.first_placeholder(from) {
            Some(placeholder) => Err(GuardError::UnknownOption {
                position,
                option: option.to_owned(),
                program: name.to_owned(),
                placeholder,
            }),
            None => Ok(()),
        }
    }

    fn refuse_in_options(
        &self,
        name: &str,
        parsed: &Parsed,
        allowed: impl Fn(Role) -> bool,
    ) -> Result<(), GuardError> {
        for &(position, role) in &parsed.options {
            if self.argv[position].placeholder && !allowed(role) {
                return Err(GuardError::Code {
                    position,
                    text: self.text(position),
                    program: name.to_owned(),
                    what: match role {
                        Role::Code => "the code",
                        Role::Flag | Role::Value => "an option",
                    },
                    fix: SCRIPT_ADVICE,
                });
            }
        }
        Ok(())
    }

    /// Parses the arguments of `name` from `from` on, for a program that takes options after
    /// operands too (rsync, GNU make and tar), and refuses a placeholder in an option that is
    /// not a plain value. An option salve does not know refuses every placeholder, wherever it
    /// stands: it may take the next argument as its value, and it may come after them.
    fn permuted_options(&self, spec: &Spec, name: &str, from: usize) -> Result<Parsed, GuardError> {
        let parsed = self.parse(spec, from, true, false);
        if let Some((at, option)) = &parsed.unknown {
            self.refuse_unknown_option(name, *at, option, from)?;
        }
        self.refuse_in_options(name, &parsed, |role| role == Role::Value)?;
        Ok(parsed)
    }

    fn refuse_shell_line(
        &self,
        name: &str,
        from: usize,
        how: &'static str,
    ) -> Result<(), GuardError> {
        match self.first_placeholder(from) {
            Some(position) => Err(GuardError::ShellLine {
                position,
                text: self.text(position),
                program: name.to_owned(),
                how,
            }),
            None => Ok(()),
        }
    }

    /// Splits the arguments from `from` into options and operands, as `spec`'s program would:
    /// options stop at `--`, at the first operand unless `permute`, and at a code option when
    /// `code_ends_options`. It stops at an option it does not know.
    fn parse(&self, spec: &Spec, from: usize, permute: bool, code_ends_options: bool) -> Parsed {
        let mut parsed = Parsed::default();
        let mut options_done = false;
        let mut i = from;
        while i < self.argv.len() {
            let text = self.argv[i].text;
            let is_option = text.len() > 1
                && (text.starts_with('-') || (spec.plus_options() && text.starts_with('+')));
            if options_done || !is_option {
                parsed.operands.push(i);
                options_done |= !permute;
                i += 1;
                continue;
            }
            if text == "--" {
                options_done = true;
                i += 1;
                continue;
            }
            let (used, found, attached) = if let Some(long) = text.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (long, None),
                };
                (name.to_owned(), spec.long_marker(name), inline.is_some())
            } else {
                match self.cluster(spec, text, &mut parsed) {
                    Ok(last) => last,
                    Err(()) => {
                        parsed.unknown = Some((i, text.to_owned()));
                        return parsed;
                    }
                }
            };
            let Some(found) = found else {
                parsed.unknown = Some((i, text.to_owned()));
                return parsed;
            };
            let role = match found {
                Marker::Code => Role::Code,
                Marker::Value | Marker::Attached => Role::Value,
                _ => Role::Flag,
            };
            match found {
                Marker::FirstOperandIsCode => parsed.first_operand_is_code = true,
                Marker::ShellMode => parsed.shell_mode = true,
                _ => {}
            }
            let takes_next = matches!(found, Marker::Value | Marker::Code) && !attached;
            parsed
                .options
                .push((i, if takes_next { Role::Flag } else { role }));
            if takes_next && i + 1 < self.argv.len() {
                i += 1;
                parsed.options.push((i, role));
            }
            if role != Role::Flag && (takes_next || attached) {
                parsed.values.push((i, used.clone()));
            }
            parsed.used.push(used);
            if found == Marker::Code {
                parsed.code_option = true;
                options_done |= code_ends_options;
            }
            i += 1;
        }
        parsed
    }

    /// Walks a cluster of short options (`-lc`, `-uroot`) and returns the last letter that
    /// decides the element's role, its marker, and whether its value is attached.
    fn cluster(
        &self,
        spec: &Spec,
        text: &str,
        parsed: &mut Parsed,
    ) -> Result<(String, Option<Marker>, bool), ()> {
        let letters = &text[1..];
        let mut last = (String::new(), Some(Marker::Flag), false);
        for (index, letter) in letters.char_indices() {
            let found = spec.short_marker(letter).ok_or(())?;
            let rest = &letters[index + letter.len_utf8()..];
            last = (letter.to_string(), Some(found), !rest.is_empty());
            match found {
                Marker::Flag => {}
                Marker::FirstOperandIsCode => parsed.first_operand_is_code = true,
                Marker::ShellMode => parsed.shell_mode = true,
                Marker::Value | Marker::Attached | Marker::Code => return Ok(last),
            }
            parsed.used.push(letter.to_string());
        }
        // A cluster of flags: its last flag stands for the element.
        last.2 = false;
        Ok(last)
    }
}

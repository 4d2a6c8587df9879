//! The action map of `salve actuate exec`: which program each action runs, as an argv
//! template with placeholders filled from the command.
//!
//! No shell is involved at any point. A template written as one string is split into argv
//! elements when the map is loaded, with shell-like quoting rules (`shlex`); placeholders are
//! then filled into single elements. A value from a command, an entity called `x; rm -rf /`
//! for instance, therefore always arrives as one literal argument, whatever it contains. The
//! program itself (the first element) may not contain a placeholder, so a command can never
//! choose what runs; [`guard`] refuses, at load, a placeholder where the program (or the
//! program a wrapper such as `sudo` runs) would parse it as code; and a value that would start
//! an argument with `-`, or holds a control character, is refused when the command comes.

use super::guard::{self, Element};
use salve_engine::wire::Command;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a program may run when the map sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The placeholders a template may use, for error messages.
const PLACEHOLDERS: &str =
    "{entity}, {action}, {id}, {incident}, {rule}, {reason}, {attempt}, {params.NAME}";

/// The action map could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be read.
    #[error("cannot read action map {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what an action map must be.
    #[error("action map {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key and what was expected.
        message: String,
    },
}

/// A value taken from the command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Entity,
    Action,
    Id,
    Incident,
    Rule,
    Reason,
    Attempt,
    Param(String),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Entity => f.write_str("{entity}"),
            Field::Action => f.write_str("{action}"),
            Field::Id => f.write_str("{id}"),
            Field::Incident => f.write_str("{incident}"),
            Field::Rule => f.write_str("{rule}"),
            Field::Reason => f.write_str("{reason}"),
            Field::Attempt => f.write_str("{attempt}"),
            Field::Param(name) => write!(f, "{{params.{name}}}"),
        }
    }
}

/// A piece of one argv element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Field(Field),
}

/// One action's program and arguments, placeholders still to fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    program: String,
    args: Vec<Vec<Segment>>,
}

impl Template {
    /// The program's argv for `command`, or why it cannot be built: a missing parameter, or
    /// a value that [`refuse_value`] refuses.
    pub fn render(&self, command: &Command) -> Result<Vec<String>, String> {
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(self.program.clone());
        for (index, arg) in self.args.iter().enumerate() {
            let mut text = String::new();
            let mut filled = None;
            for segment in arg {
                match segment {
                    Segment::Text(literal) => text.push_str(literal),
                    Segment::Field(field) => {
                        let value = field_value(field, command)?;
                        refuse_value(field, &value, &text, index + 1)?;
                        text.push_str(&value);
                        filled = Some(field);
                    }
                }
            }
            if let Some(field) = filled {
                refuse_terminator(field, &text, index + 1)?;
            }
            argv.push(text);
        }
        Ok(argv)
    }
}

/// Refuses, at run time, a value no command field legitimately holds in an argument: one that
/// starts the argument with `-` (the program would read it as an option: an entity called
/// `-oProxyCommand=...` or `--help`), or starts the host of `USER@HOST` with it (rsync and scp
/// hand the host to ssh as an argument of its own); one with a `..` path segment (it would
/// climb out of the directory the template names: `rm -r /srv/cache/{entity}`); an empty one
/// (the same template would name the whole cache, and `find "!{x}"` would be an operator);
/// and one with a control character (a newline splits a line-based protocol or config the
/// program writes). The guard at load time cannot see these: they are about the values, not
/// where they go.
fn refuse_value(field: &Field, value: &str, before: &str, position: usize) -> Result<(), String> {
    // The value comes from the command and goes into the ack: show a little of it.
    let shown = || value.chars().take(40).collect::<String>();
    if (before.is_empty() || before.ends_with('@')) && value.starts_with('-') {
        let shown = shown();
        let what = if before.is_empty() {
            format!("start argument {position}")
        } else {
            format!("start the host after `{before}` in argument {position}")
        };
        return Err(format!(
            "{field} = {shown:?} would {what} with `-`, and the program could read it as an option; refused (for a value that may be negative, write it after an option, e.g. `--delta={field}`)"
        ));
    }
    if value.is_empty() {
        return Err(format!(
            "{field} = \"\" is empty, which would leave argument {position} as the template's fixed text alone (`rm -r /srv/cache/{{entity}}` would name the whole cache); refused"
        ));
    }
    if value.split('/').any(|segment| segment == "..") {
        let shown = shown();
        return Err(format!(
            "{field} = {shown:?} has a `..` path segment, which would climb out of the directory the template names; refused"
        ));
    }
    if value.chars().any(char::is_control) {
        let shown = shown();
        return Err(format!(
            "{field} = {shown:?} contains a control character (a newline, a tab...), which no entity or parameter needs; refused"
        ));
    }
    Ok(())
}

/// Refuses an argument that a value made exactly `;` or `+`: find reads either as the end of
/// `-exec`'s command (`+` right after `{}`), and the template's arguments after it would become
/// find's expression.
fn refuse_terminator(field: &Field, argument: &str, position: usize) -> Result<(), String> {
    if argument == ";" || argument == "+" {
        return Err(format!(
            "{field} would make argument {position} exactly {argument:?}, which ends find's `-exec` command early; refused"
        ));
    }
    Ok(())
}

fn field_value(field: &Field, command: &Command) -> Result<String, String> {
    Ok(match field {
        Field::Entity => command.entity.clone(),
        Field::Action => command.action.clone(),
        Field::Id => command.id.clone(),
        Field::Incident => command.incident.clone(),
        Field::Rule => command.rule.clone(),
        Field::Reason => command.reason.clone(),
        Field::Attempt => command.attempt.to_string(),
        Field::Param(name) => match command.params.get(name) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Null) | None => {
                return Err(format!(
                    "the template needs parameter `{name}`, and the command's params have none (the rule's action_params set them)"
                ))
            }
            Some(other) => other.to_string(),
        },
    })
}

/// Every action's template, and the time limit for the programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionMap {
    /// Per action.
    pub actions: BTreeMap<String, Template>,
    /// How long a program may run before it is killed and the command `failed`.
    pub timeout: Duration,
}

impl ActionMap {
    /// Reads and checks an action map file.
    pub fn load(path: &Path) -> Result<Self, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| MapError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses an action map; the error names the key at fault and what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut actions = BTreeMap::new();
        for (key, value) in &table {
            match key.as_str() {
                "timeout" => timeout = parse_timeout(value)?,
                "actions" => {
                    let toml::Value::Table(entries) = value else {
                        return Err(format!(
                            "`actions`: expected a table of action = command, found a TOML {}",
                            value.type_str()
                        ));
                    };
                    for (action, template) in entries {
                        let template = parse_template(template)
                            .map_err(|message| format!("`actions.{action}`: {message}"))?;
                        actions.insert(action.clone(), template);
                    }
                }
                other => {
                    return Err(format!(
                        "unknown key `{other}`: expected `timeout` and an `[actions]` table"
                    ))
                }
            }
        }
        if actions.is_empty() {
            return Err(
                "no actions: expected an `[actions]` table such as `restart = [\"systemctl\", \"restart\", \"{entity}\"]`"
                    .into(),
            );
        }
        Ok(Self { actions, timeout })
    }

    /// The template for `action`.
    pub fn get(&self, action: &str) -> Option<&Template> {
        self.actions.get(action)
    }
}

fn parse_timeout(value: &toml::Value) -> Result<Duration, String> {
    let ms = match value {
        toml::Value::Integer(seconds) if *seconds > 0 => seconds.saturating_mul(1000),
        toml::Value::String(text) => salve_rules::parse_duration_ms(text)
            .map_err(|e| format!("`timeout`: {e}: expected a duration such as \"30s\""))?,
        _ => {
            return Err(format!(
                "`timeout`: expected a duration such as \"30s\" or a positive number of seconds, found {value}"
            ))
        }
    };
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err("`timeout`: expected a positive duration".into()),
    }
}

fn parse_template(value: &toml::Value) -> Result<Template, String> {
    let argv: Vec<String> = match value {
        toml::Value::String(line) => shlex::split(line).ok_or_else(|| {
            "the command line has an unclosed quote or a trailing backslash".to_owned()
        })?,
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                toml::Value::String(text) => Ok(text.clone()),
                other => Err(format!(
                    "element {index}: expected a string, found a TOML {}",
                    other.type_str()
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "expected a command line string or an array of strings (argv), found a TOML {}",
                other.type_str()
            ))
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err("expected a program to run, found an empty command".into());
    };
    let program_segments = parse_segments(program)?;
    let program = match program_segments.as_slice() {
        [] => return Err("expected a program to run, found an empty program name".into()),
        [Segment::Text(text)] => text.clone(),
        _ => {
            return Err(format!(
                "the program `{program}` contains a placeholder: the program must be fixed in the map, so that no command can choose what runs; placeholders go in the arguments"
            ))
        }
    };
    let args: Vec<Vec<Segment>> = args
        .iter()
        .map(|arg| parse_segments(arg))
        .collect::<Result<_, _>>()?;
    let elements: Vec<Element<'_>> = argv
        .iter()
        .zip(std::iter::once(&program_segments).chain(&args))
        .map(|(text, segments)| Element {
            text,
            placeholder: segments.iter().any(|s| matches!(s, Segment::Field(_))),
            lead: match segments.first() {
                Some(Segment::Text(lead)) => lead,
                _ => "",
            },
        })
        .collect();
    guard::check(&elements).map_err(|refusal| refusal.to_string())?;
    Ok(Template { program, args })
}

/// Splits one argv element into text and placeholders. `{{` and `}}` are literal braces.
fn parse_segments(element: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut chars = element.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(format!(
                                "`{element}`: unclosed `{{`; write `{{{{` for a literal brace"
                            ))
                        }
                    }
                }
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Field(parse_field(&name)?));
            }
            '}' => {
                return Err(format!(
                    "`{element}`: unmatched `}}`; write `}}}}` for a literal brace"
                ))
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(segments)
}

fn parse_field(name: &str) -> Result<Field, String> {
    Ok(match name.trim() {
        "entity" => Field::Entity,
        "action" => Field::Action,
        "id" => Field::Id,
        "incident" => Field::Incident,
        "rule" => Field::Rule,
        "reason" => Field::Reason,
        "attempt" => Field::Attempt,
        other => match other.split_once('.') {
            Some(("params", param)) if !param.is_empty() => Field::Param(param.to_owned()),
            Some(("labels", _)) => {
                return Err(format!(
                    "placeholder `{{{other}}}`: commands do not carry the entity's labels; use {{entity}}, or have the rule pass the value in action_params and use {{params.NAME}}"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}`: expected one of {PLACEHOLDERS}"
                ))
            }
        },
    })
}

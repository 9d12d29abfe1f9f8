//! Templates: `{{ expression }}` values, evaluated with minijinja.
//!
//! A template that is one single expression keeps the type of its value
//! (null, number, boolean, text), so an application without a risk score
//! clears a field instead of writing "none". Anything else renders to text,
//! where null and undefined render as nothing.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use minijinja::value::{Serde, Value as TemplateValue};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use crate::text::{Position, suggestion};

/// The one environment every template runs in: builtin filters and tests,
/// no HTML escaping (nothing here is HTML), undefined values that chain
/// (`{{ Owner.Email }}` is empty when `Owner` is null or absent) and render
/// as nothing, like null.
static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Chainable);
    environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    environment.set_formatter(|output, state, value| {
        let shown = if value.is_none() {
            &TemplateValue::UNDEFINED
        } else {
            value
        };
        minijinja::escape_formatter(output, state, shown)
    });
    environment
});

/// A checked template and where it was written.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    /// The inner expression when the template is exactly one `{{ ... }}`.
    expression: Option<String>,
    /// Where the template text starts in the file.
    origin: Position,
    /// Every variable path read, with the position of its first use;
    /// computed once, since query building asks for them on every poll.
    variables: Vec<(String, Position)>,
}

/// A template problem, with its byte range in the template source.
#[derive(Debug, Clone)]
pub struct TemplateError {
    pub message: String,
    pub range: Option<std::ops::Range<usize>>,
}

impl Template {
    /// Compiles `source` and runs it once against an empty context, so syntax
    /// errors and unknown filters, tests or functions surface at load time
    /// rather than when the first Account flows through. `verbatim` says
    /// whether `source` appears as is in the file from `origin` (false for
    /// escaped or folded YAML strings), so that an offset into it maps to an
    /// exact file position; otherwise positions fall back to `origin`.
    pub fn compile(
        source: &str,
        origin: Position,
        verbatim: bool,
    ) -> Result<Template, TemplateError> {
        let expression = single_expression(source);
        let names: BTreeSet<String> = match &expression {
            Some(expression) => {
                let compiled = ENVIRONMENT
                    .compile_expression(expression)
                    .map_err(|error| {
                        // Offsets in the expression are relative to the inner
                        // text; shift them back into the template source.
                        let shift = source.find(expression.as_str()).unwrap_or_default();
                        template_error(&error, shift)
                    })?;
                rehearse(
                    compiled.eval(TemplateValue::UNDEFINED).map(drop),
                    source,
                    expression,
                )?;
                compiled.undeclared_variables(true).into_iter().collect()
            }
            None => {
                let compiled = ENVIRONMENT
                    .template_from_str(source)
                    .map_err(|error| template_error(&error, 0))?;
                rehearse(
                    compiled.render(TemplateValue::UNDEFINED).map(drop),
                    source,
                    source,
                )?;
                compiled.undeclared_variables(true).into_iter().collect()
            }
        };
        let variables = names
            .into_iter()
            .map(|name| {
                let offset = source.find(name.as_str()).unwrap_or_default();
                (name, position_in(source, origin, verbatim, offset))
            })
            .collect();
        Ok(Template {
            source: source.to_owned(),
            expression,
            origin,
            variables,
        })
    }

    /// The expression, trimmed, when the template is one single `{{ ... }}`.
    pub fn expression(&self) -> Option<&str> {
        self.expression.as_deref().map(str::trim)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn position(&self) -> Position {
        self.origin
    }

    /// Every variable path the template reads (`Name`, `Owner.Email`,
    /// `application.risk_level`), with the position of its first use.
    pub fn variables(&self) -> &[(String, Position)] {
        &self.variables
    }

    /// Evaluates against `context`: the typed value of a single expression,
    /// else the rendered text.
    pub fn evaluate(&self, context: &Value) -> Result<Value, TemplateError> {
        let context = TemplateValue::from(Serde(context));
        match &self.expression {
            Some(expression) => {
                let shift = self.source.find(expression.as_str()).unwrap_or_default();
                let compiled = ENVIRONMENT
                    .compile_expression(expression)
                    .map_err(|error| template_error(&error, shift))?;
                let value = compiled
                    .eval(context)
                    .map_err(|error| template_error(&error, shift))?;
                serde_json::to_value(&value).map_err(|error| TemplateError {
                    message: format!("the value of `{expression}` cannot be written: {error}"),
                    range: None,
                })
            }
            None => ENVIRONMENT
                .render_str(&self.source, context)
                .map(Value::String)
                .map_err(|error| template_error(&error, 0)),
        }
    }
}

/// The file position of byte `offset` of a template `source` written from
/// `origin`; see [`Template`] for `verbatim`.
pub fn position_in(source: &str, origin: Position, verbatim: bool, offset: usize) -> Position {
    if !verbatim {
        return origin;
    }
    let inner = Position::of_offset(source, offset);
    if inner.line == 1 {
        Position {
            line: origin.line,
            column: origin.column + inner.column - 1,
        }
    } else {
        Position {
            line: origin.line + inner.line - 1,
            column: inner.column,
        }
    }
}

/// Whether a YAML string is a template rather than fixed text.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The inner expression of a template that is exactly one `{{ ... }}`
/// (surrounding whitespace and `-` whitespace control allowed).
fn single_expression(source: &str) -> Option<String> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    let is_single = !inner.contains("{{")
        && !inner.contains("}}")
        && !inner.contains("{%")
        && !inner.contains("{#");
    (is_single && !inner.trim().is_empty()).then(|| inner.trim().to_owned())
}

/// The first run of a template, against nothing: only problems that no
/// Account could avoid (an unknown filter, test or function) are reported;
/// everything else depends on the data and is left to the real run.
fn rehearse(
    outcome: Result<(), minijinja::Error>,
    source: &str,
    evaluated: &str,
) -> Result<(), TemplateError> {
    match outcome {
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
            ) =>
        {
            let shift = source.find(evaluated).unwrap_or_default();
            let range = error
                .range()
                .map(|range| range.start + shift..range.end + shift);
            // The range covers the name, or for a function the whole call.
            let name = range
                .clone()
                .and_then(|range| source.get(range))
                .unwrap_or_default();
            let name = name
                .split(|character: char| !(character.is_alphanumeric() || character == '_'))
                .next()
                .unwrap_or_default();
            let (what, near) = match error.kind() {
                ErrorKind::UnknownFilter => ("filter", builtin_near(name, FILTERS, "{{ 1 | %s }}")),
                ErrorKind::UnknownTest => ("test", builtin_near(name, TESTS, "{{ 1 is %s }}")),
                _ => ("function", builtin_near(name, FUNCTIONS, "{{ %s() }}")),
            };
            let message = match near {
                Some(near) => format!("unknown {what} `{name}`; did you mean `{near}`?"),
                None => format!("unknown {what} `{name}` (see the minijinja builtin {what}s)"),
            };
            Err(TemplateError { message, range })
        }
        _ => Ok(()),
    }
}

/// Names offered as "did you mean" for a misspelt filter, test or function.
/// Only those this build really has are offered (see [`builtin_near`]), so
/// the lists cannot mislead if minijinja changes.
const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "default",
    "dictsort",
    "escape",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
];
const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "even",
    "false",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "true",
    "undefined",
    "upper",
];
const FUNCTIONS: &[&str] = &["dict", "namespace", "range"];

/// The builtin closest to a misspelt `name`, among `candidates` that the
/// environment knows (`probe` is a template using the candidate at `%s`).
fn builtin_near(name: &str, candidates: &[&'static str], probe: &str) -> Option<&'static str> {
    let known = candidates.iter().copied().filter(|candidate| {
        let outcome = ENVIRONMENT.render_str(&probe.replace("%s", candidate), ());
        !matches!(
            outcome.map_err(|error| error.kind()),
            Err(ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction)
        )
    });
    suggestion(name, known)
}

fn template_error(error: &minijinja::Error, shift: usize) -> TemplateError {
    let detail = error
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| error.kind().to_string());
    TemplateError {
        message: format!("template error: {detail}"),
        range: error
            .range()
            .map(|range| range.start + shift..range.end + shift),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> Template {
        Template::compile(source, Position::START, true).unwrap()
    }

    #[test]
    fn single_expressions_are_recognised() {
        assert_eq!(single_expression("{{ a.b }}").as_deref(), Some("a.b"));
        assert_eq!(
            single_expression("  {{- a | upper -}} ").as_deref(),
            Some("a | upper")
        );
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("x {{ a }}"), None);
        assert_eq!(single_expression("{{ }}"), None);
    }

    #[test]
    fn single_expressions_keep_their_type() {
        let context =
            serde_json::json!({"application": {"risk_score": null, "risk_level": 0, "ok": true}});
        assert_eq!(
            template("{{ application.risk_score }}")
                .evaluate(&context)
                .unwrap(),
            Value::Null
        );
        assert_eq!(
            template("{{ application.risk_level }}")
                .evaluate(&context)
                .unwrap(),
            serde_json::json!(0)
        );
        assert_eq!(
            template("{{ application.ok }}").evaluate(&context).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            template("{{ missing.deeper }}").evaluate(&context).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn text_templates_render_null_as_nothing() {
        let context = serde_json::json!({"Owner": null, "application": {"risk_score": null}});
        let rendered = template("score={{ application.risk_score }} owner={{ Owner.Email }}")
            .evaluate(&context);
        assert_eq!(rendered.unwrap(), Value::String("score= owner=".into()));
    }

    #[test]
    fn unknown_filters_tests_and_functions_are_caught_before_any_data() {
        let message = |source: &str| {
            Template::compile(source, Position::START, true)
                .unwrap_err()
                .message
        };
        assert_eq!(
            message("{{ Name | uper }}"),
            "unknown filter `uper`; did you mean `upper`?"
        );
        assert_eq!(
            message("a {{ Name is defnied }}"),
            "unknown test `defnied`; did you mean `defined`?"
        );
        assert_eq!(
            message("{{ rnage(3) }}"),
            "unknown function `rnage`; did you mean `range`?"
        );
        assert_eq!(
            message("{{ Name | frobnicate }}"),
            "unknown filter `frobnicate` (see the minijinja builtin filters)"
        );
        // Data-dependent failures are left to the real run.
        assert!(Template::compile("{{ Name + 1 }}", Position::START, true).is_ok());
    }

    #[test]
    fn positions_inside_a_verbatim_template() {
        let origin = Position {
            line: 4,
            column: 10,
        };
        let compiled = Template::compile("a {{ Name }}", origin, true).unwrap();
        assert_eq!(
            compiled.variables(),
            vec![(
                "Name".to_owned(),
                Position {
                    line: 4,
                    column: 15
                }
            )]
        );
        let folded = Template::compile("a {{ Name }}", origin, false).unwrap();
        assert_eq!(folded.variables(), [("Name".to_owned(), origin)]);
    }
}

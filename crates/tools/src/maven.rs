//! Maven's dependencies live in `pom.xml`, and maven has no command that adds, removes or
//! re-versions one: `package_manager`'s java install, uninstall and update edit the file, as a
//! person would. [`PomEdit`] is that edit, a file tool run in the sandbox like the others.
//!
//! The edit is textual: the file is read with an XML reader only to find where the project's
//! `<dependencies>`, each `<dependency>` and `<properties>` are, and the change is spliced in
//! at those byte offsets, so comments, layout and everything else stay as they were. Every
//! package of a call is applied in memory first; one that cannot be applied leaves the file
//! untouched, and the file is replaced atomically.

use std::collections::HashMap;
use std::ops::Range;

use async_trait::async_trait;
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use serde_json::{Value, json};
use turbo_core::tool::{RiskLevel, ToolCategory};

use crate::error::{Error, Result};
use crate::schema::{self, Args};
use crate::tool::{Tool, ToolContext, ToolOutput};

/// The tool's name; it is not in the standard toolbox, `package_manager` calls it.
pub(crate) const NAME: &str = "maven_pom";
const POM: &str = "pom.xml";
const OPERATIONS: &[&str] = &["install", "uninstall", "update"];
const SCOPES: &[&str] = &["compile", "provided", "runtime", "test", "system", "import"];

/// Maven coordinates as a call names them: `groupId:artifactId[:version[:scope]]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Coordinates {
    group: String,
    artifact: String,
    version: Option<String>,
    scope: Option<String>,
}

impl Coordinates {
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        // Versions may be ranges ("[1.0,2.0)"), never property references or markup.
        let version_ok =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-+[](),".contains(c));
        let usage = "name maven packages as groupId:artifactId:version (e.g. com.google.guava:guava:33.2.1-jre), \
                     with :scope after the version if wanted";
        match parts.as_slice() {
            [group, artifact, rest @ ..] if name_ok(group) && name_ok(artifact) && rest.len() <= 2 => {
                let version = rest.first().map(|v| v.to_string());
                if let Some(v) = &version
                    && !version_ok(v)
                {
                    return Err(format!("'{v}' in '{text}' is not a version"));
                }
                let scope = rest.get(1).map(|s| s.to_string());
                if let Some(s) = &scope
                    && !SCOPES.contains(&s.as_str())
                {
                    return Err(format!("'{s}' in '{text}' is not a maven scope: use one of {}", SCOPES.join(", ")));
                }
                Ok(Self { group: group.to_string(), artifact: artifact.to_string(), version, scope })
            }
            _ => Err(format!("'{text}' is not maven coordinates: {usage}")),
        }
    }

    fn key(&self) -> String {
        format!("{}:{}", self.group, self.artifact)
    }
}

/// One `<dependency>` of the project (or of its `<dependencyManagement>`).
#[derive(Debug)]
struct Dependency {
    group: String,
    artifact: String,
    version: Option<String>,
    /// The text between `<version>` and `</version>`.
    version_at: Option<Range<usize>>,
    /// The element, from the start of its line when only blanks precede it there, through
    /// the end of its line when only blanks follow.
    whole: Range<usize>,
}

/// Where things are in a `pom.xml`.
#[derive(Debug, Default)]
struct Pom {
    dependencies: Vec<Dependency>,
    managed: Vec<Dependency>,
    /// Where the project's `</dependencies>` starts.
    dependencies_end: Option<usize>,
    /// Where `</project>` starts.
    project_end: Option<usize>,
    /// The text of each `<properties>` child.
    properties: HashMap<String, Range<usize>>,
    /// The indentation of the project's children (one level).
    unit: Option<String>,
}

/// The blanks before `at` on its line, when only blanks precede it.
fn indent_before(text: &str, at: usize) -> Option<&str> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let lead = &text[line_start..at];
    lead.chars().all(|c| c == ' ' || c == '\t').then_some(lead)
}

/// `range` widened to whole lines when only blanks surround it on them.
fn whole_lines(text: &str, range: Range<usize>) -> Range<usize> {
    let start = indent_before(text, range.start).map_or(range.start, |lead| range.start - lead.len());
    let rest = &text[range.end..];
    let end = match rest.find('\n') {
        Some(i) if rest[..i].trim().is_empty() => range.end + i + 1,
        _ => range.end,
    };
    start..end
}

impl Pom {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut reader = Reader::from_str(text);
        let mut pom = Pom::default();
        // Each open element: its local name and where its content starts.
        let mut open: Vec<(String, usize)> = Vec::new();
        // The dependency being read: its start, and its fields so far.
        let mut reading: Option<(usize, HashMap<String, Range<usize>>)> = None;
        loop {
            let before = offset(reader.buffer_position());
            let event = reader
                .read_event()
                .map_err(|e| format!("{POM} is not well-formed XML (near byte {}): {e}", reader.error_position()))?;
            let after = offset(reader.buffer_position());
            match event {
                Event::Start(e) => {
                    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                    if open.len() == 1 && pom.unit.is_none() {
                        pom.unit = indent_before(text, before).filter(|u| !u.is_empty()).map(str::to_owned);
                    }
                    open.push((name, after));
                    if is_dependency(&open) {
                        reading = Some((before, HashMap::new()));
                    }
                }
                Event::End(_) => {
                    let path: Vec<&str> = open.iter().map(|(n, _)| n.as_str()).collect();
                    let content = open.last().map_or(before, |(_, s)| *s)..before;
                    match path.as_slice() {
                        ["project"] => pom.project_end = Some(before),
                        ["project", "dependencies"] => pom.dependencies_end = Some(before),
                        ["project", "properties", name] => {
                            pom.properties.insert(name.to_string(), content);
                        }
                        [.., "dependency", field] if open.len() > 1 && is_dependency(&open[..open.len() - 1]) => {
                            if let Some((_, fields)) = &mut reading {
                                fields.insert(field.to_string(), content);
                            }
                        }
                        _ if is_dependency(&open) => {
                            if let Some((start, fields)) = reading.take() {
                                let field = |f: &str| fields.get(f).map(|r| text[r.clone()].trim().to_owned());
                                let dependency = Dependency {
                                    group: field("groupId").unwrap_or_default(),
                                    artifact: field("artifactId").unwrap_or_default(),
                                    version: field("version"),
                                    version_at: fields.get("version").cloned(),
                                    whole: whole_lines(text, start..after),
                                };
                                if path[1] == "dependencies" {
                                    pom.dependencies.push(dependency);
                                } else {
                                    pom.managed.push(dependency);
                                }
                            }
                        }
                        _ => {}
                    }
                    open.pop();
                }
                Event::Empty(e) if open.len() == 1 && e.local_name().as_ref() == b"dependencies" => {
                    return Err(format!(
                        "{POM} has an empty <dependencies/> element: write it as <dependencies></dependencies>"
                    ));
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if pom.project_end.is_none() {
            return Err(format!("{POM} has no <project> element"));
        }
        Ok(pom)
    }

    fn find<'a>(list: &'a [Dependency], wanted: &Coordinates) -> Option<&'a Dependency> {
        list.iter().find(|d| d.group == wanted.group && d.artifact == wanted.artifact)
    }

    fn unit(&self) -> &str {
        self.unit.as_deref().unwrap_or("    ")
    }
}

/// Whether the open elements end at a dependency of the project or of its management.
fn is_dependency(open: &[(String, usize)]) -> bool {
    let path: Vec<&str> = open.iter().map(|(n, _)| n.as_str()).collect();
    matches!(
        path.as_slice(),
        ["project", "dependencies", "dependency"] | ["project", "dependencyManagement", "dependencies", "dependency"]
    )
}

fn offset(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

/// The pom with one package applied, and what was done; or why it cannot be.
fn apply(text: &str, operation: &str, wanted: &Coordinates) -> std::result::Result<(String, String), String> {
    let pom = Pom::parse(text)?;
    let splice = |range: Range<usize>, with: &str| format!("{}{with}{}", &text[..range.start], &text[range.end..]);
    let key = wanted.key();
    let present = || {
        let names: Vec<String> = pom.dependencies.iter().map(|d| format!("{}:{}", d.group, d.artifact)).collect();
        if names.is_empty() { "it has none".to_owned() } else { format!("it has {}", names.join(", ")) }
    };
    match operation {
        "uninstall" => {
            let found = Pom::find(&pom.dependencies, wanted)
                .ok_or_else(|| format!("{key} is not a dependency in {POM} ({})", present()))?;
            Ok((splice(found.whole.clone(), ""), format!("removed {key}")))
        }
        "install" | "update" => {
            let Some(version) = &wanted.version else {
                return Err(format!(
                    "name the version of {key} ({key}:VERSION): {POM} pins every dependency's version"
                ));
            };
            let Some(found) = Pom::find(&pom.dependencies, wanted) else {
                if operation == "update" {
                    return Err(format!("{key} is not a dependency in {POM} ({}): install it", present()));
                }
                return Ok((insert(text, &pom, wanted, version)?, format!("added {key}:{version}")));
            };
            // The version is the dependency's own, a property's, or its management's.
            let (at, from) = match (&found.version_at, &found.version) {
                (Some(at), Some(v)) => {
                    match v.strip_prefix("${").and_then(|p| p.strip_suffix('}')) {
                        Some(property) => {
                            let at = pom.properties.get(property).ok_or_else(|| {
                            format!("{key}'s version is ${{{property}}}, which {POM} does not define (a parent pom does)")
                        })?;
                            (at.clone(), format!("{} (property {property})", text[at.clone()].trim()))
                        }
                        None => (at.clone(), v.clone()),
                    }
                }
                _ => match Pom::find(&pom.managed, wanted).and_then(|m| m.version_at.clone().zip(m.version.clone())) {
                    Some((at, v)) if !v.starts_with("${") => (at, format!("{v} (dependencyManagement)")),
                    _ => {
                        return Err(format!(
                            "{key} takes its version from a parent pom or a property; change it there"
                        ));
                    }
                },
            };
            if text[at.clone()].trim() == version.as_str() {
                return Ok((text.to_owned(), format!("{key} is already at {version}")));
            }
            Ok((splice(at, version), format!("{key}: {from} -> {version}")))
        }
        other => Err(format!("{other} is not an operation of {NAME}")),
    }
}

/// The pom with a new dependency added to the project's `<dependencies>` (made if missing).
fn insert(text: &str, pom: &Pom, wanted: &Coordinates, version: &str) -> std::result::Result<String, String> {
    let unit = pom.unit();
    let element = |indent: &str| {
        let mut fields = vec![
            format!("<groupId>{}</groupId>", wanted.group),
            format!("<artifactId>{}</artifactId>", wanted.artifact),
            format!("<version>{version}</version>"),
        ];
        if let Some(scope) = &wanted.scope {
            fields.push(format!("<scope>{scope}</scope>"));
        }
        let inner: String = fields.iter().map(|f| format!("{indent}{unit}{f}\n")).collect();
        format!("{indent}<dependency>\n{inner}{indent}</dependency>\n")
    };
    let (at, block) = match pom.dependencies_end {
        Some(end) => {
            let lead = indent_before(text, end);
            let indent = pom
                .dependencies
                .first()
                .and_then(|d| indent_before(text, d.whole.start + leading_blanks(&text[d.whole.clone()])))
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}{unit}", lead.unwrap_or(unit)));
            match lead {
                // Before the line of `</dependencies>`.
                Some(lead) => (end - lead.len(), element(&indent)),
                None => (end, format!("\n{}", element(&indent))),
            }
        }
        None => {
            let end = pom.project_end.ok_or_else(|| format!("{POM} has no </project>"))?;
            let block = format!("{unit}<dependencies>\n{}{unit}</dependencies>\n", element(&format!("{unit}{unit}")));
            match indent_before(text, end) {
                Some(lead) => (end - lead.len(), block),
                None => (end, format!("\n{block}")),
            }
        }
    };
    Ok(format!("{}{block}{}", &text[..at], &text[at..]))
}

fn leading_blanks(s: &str) -> usize {
    s.len() - s.trim_start_matches([' ', '\t']).len()
}

/// The tool that edits `pom.xml`'s dependencies.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PomEdit;

#[async_trait]
impl Tool for PomEdit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Add, remove or re-version dependencies in the workspace's pom.xml."
    }

    fn parameters(&self) -> Value {
        schema::object(
            json!({
                "operation": {"type": "string", "enum": OPERATIONS},
                "packages": {"type": "array", "items": {"type": "string"}, "description": "groupId:artifactId[:version[:scope]]"},
            }),
            &["operation", "packages"],
        )
    }

    fn risk(&self) -> RiskLevel {
        RiskLevel::Medium
    }

    fn mutating(&self) -> bool {
        true
    }

    fn category(&self) -> ToolCategory {
        ToolCategory::PackageManagement
    }

    async fn call(&self, args: &Value, ctx: &ToolContext) -> Result<ToolOutput> {
        let args = Args::new(NAME, args);
        let operation = args.string("operation")?;
        let mut wanted = Vec::new();
        for value in args.array("packages")? {
            let text = value.as_str().ok_or_else(|| Error::bad_args(NAME, "packages must be strings"))?;
            wanted.push(Coordinates::parse(text).map_err(|why| Error::bad_args(NAME, why))?);
        }
        let ws = &ctx.workspace;
        let abs = ws.resolve(POM)?;
        if !abs.exists() {
            return Ok(ToolOutput {
                content: format!("the workspace has no {POM}: java packages are the dependencies of a maven project"),
                ..ToolOutput::default()
            });
        }
        let Ok(original) = String::from_utf8(crate::advanced_fs::read_bytes(ws, &abs)?) else {
            return Ok(ToolOutput { content: format!("{POM} is not UTF-8 text"), ..ToolOutput::default() });
        };
        // All in memory first: one package that cannot be applied changes nothing.
        let mut text = original.clone();
        let mut done = Vec::new();
        for coordinates in &wanted {
            match apply(&text, operation, coordinates) {
                Ok((next, said)) => {
                    text = next;
                    done.push(said);
                }
                Err(why) => {
                    return Ok(ToolOutput { content: format!("{why}; {POM} is unchanged"), ..ToolOutput::default() });
                }
            }
        }
        if text == original {
            return Ok(ToolOutput::ok(format!("{}; {POM} is unchanged", done.join("; "))));
        }
        crate::fs::write::write(ws, &abs, POM, text.as_bytes())?;
        let fetched = if operation == "uninstall" { "" } else { " (maven fetches them on the next build)" };
        Ok(ToolOutput {
            files_changed: vec![POM.to_owned()],
            ..ToolOutput::ok(format!("{POM}: {}{fetched}", done.join("; ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POM_TEXT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.example</groupId>
  <artifactId>demo</artifactId>
  <version>1.0</version>
  <properties>
    <junit.version>5.10.2</junit.version>
  </properties>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>org.slf4j</groupId>
        <artifactId>slf4j-api</artifactId>
        <version>2.0.12</version>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <!-- logging: <dependency> in a comment is not one -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
    </dependency>
    <dependency>
      <groupId>org.junit.jupiter</groupId>
      <artifactId>junit-jupiter</artifactId>
      <version>${junit.version}</version>
      <scope>test</scope>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <artifactId>maven-surefire-plugin</artifactId>
        <dependencies>
          <dependency><groupId>x</groupId><artifactId>plugin-dep</artifactId><version>1</version></dependency>
        </dependencies>
      </plugin>
    </plugins>
  </build>
</project>
"#;

    fn coordinates(text: &str) -> Coordinates {
        Coordinates::parse(text).unwrap()
    }

    #[test]
    fn finds_the_projects_dependencies_only() {
        let pom = Pom::parse(POM_TEXT).unwrap();
        let names: Vec<_> = pom.dependencies.iter().map(|d| d.artifact.as_str()).collect();
        assert_eq!(names, ["slf4j-api", "junit-jupiter"], "not the plugin's, not the comment");
        assert_eq!(pom.managed.len(), 1);
        assert_eq!(pom.unit(), "  ");
        assert_eq!(&POM_TEXT[pom.properties["junit.version"].clone()], "5.10.2");
    }

    #[test]
    fn install_adds_with_the_files_indentation_and_keeps_the_rest() {
        let (out, said) = apply(POM_TEXT, "install", &coordinates("com.google.guava:guava:33.2.1-jre")).unwrap();
        assert_eq!(said, "added com.google.guava:guava:33.2.1-jre");
        let added = "    <dependency>\n      <groupId>com.google.guava</groupId>\n      <artifactId>guava</artifactId>\n      \
                     <version>33.2.1-jre</version>\n    </dependency>\n  </dependencies>\n  <build>";
        assert!(out.contains(added), "{out}");
        assert_eq!(out.replace(&added[..added.len() - "  </dependencies>\n  <build>".len()], ""), POM_TEXT);
        let again = Pom::parse(&out).unwrap();
        assert_eq!(again.dependencies.len(), 3);
    }

    #[test]
    fn install_with_a_scope_and_into_a_pom_without_dependencies() {
        let bare = "<project>\n\t<modelVersion>4.0.0</modelVersion>\n</project>\n";
        let (out, _) = apply(bare, "install", &coordinates("junit:junit:4.13.2:test")).unwrap();
        assert_eq!(
            out,
            "<project>\n\t<modelVersion>4.0.0</modelVersion>\n\t<dependencies>\n\t\t<dependency>\n\t\t\t<groupId>junit</groupId>\n\
             \t\t\t<artifactId>junit</artifactId>\n\t\t\t<version>4.13.2</version>\n\t\t\t<scope>test</scope>\n\
             \t\t</dependency>\n\t</dependencies>\n</project>\n"
        );
    }

    #[test]
    fn uninstall_removes_the_whole_element_and_its_lines() {
        let (out, said) = apply(POM_TEXT, "uninstall", &coordinates("org.junit.jupiter:junit-jupiter")).unwrap();
        assert_eq!(said, "removed org.junit.jupiter:junit-jupiter");
        assert!(!out.contains("junit-jupiter") && out.contains("<junit.version>5.10.2"), "{out}");
        assert!(out.contains("    </dependency>\n  </dependencies>\n"), "no blank line left: {out}");
        let missing = apply(POM_TEXT, "uninstall", &coordinates("junit:junit")).unwrap_err();
        assert!(missing.contains("junit:junit is not a dependency") && missing.contains("org.slf4j:slf4j-api"));
    }

    #[test]
    fn update_follows_properties_and_dependency_management() {
        let (out, said) = apply(POM_TEXT, "update", &coordinates("org.junit.jupiter:junit-jupiter:5.11.0")).unwrap();
        assert_eq!(said, "org.junit.jupiter:junit-jupiter: 5.10.2 (property junit.version) -> 5.11.0");
        assert!(out.contains("<junit.version>5.11.0</junit.version>") && out.contains("${junit.version}"));
        let (out, said) = apply(POM_TEXT, "update", &coordinates("org.slf4j:slf4j-api:2.0.13")).unwrap();
        assert_eq!(said, "org.slf4j:slf4j-api: 2.0.12 (dependencyManagement) -> 2.0.13");
        assert!(out.contains("<version>2.0.13</version>"));
        let no_version = apply(POM_TEXT, "update", &coordinates("org.slf4j:slf4j-api")).unwrap_err();
        assert!(no_version.contains("name the version"), "{no_version}");
        let absent = apply(POM_TEXT, "update", &coordinates("junit:junit:4.13.2")).unwrap_err();
        assert!(absent.contains("install it"), "{absent}");
        // Installing a present dependency moves it to the version named.
        let (_, said) = apply(POM_TEXT, "install", &coordinates("org.junit.jupiter:junit-jupiter:5.10.2")).unwrap();
        assert_eq!(said, "org.junit.jupiter:junit-jupiter is already at 5.10.2");
    }

    #[test]
    fn bad_coordinates_and_bad_poms_are_explained() {
        assert!(Coordinates::parse("guava").unwrap_err().contains("groupId:artifactId:version"));
        assert!(Coordinates::parse("a:b:${x}").unwrap_err().contains("not a version"));
        assert!(Coordinates::parse("a:b:1:everywhere").unwrap_err().contains("not a maven scope"));
        assert!(Coordinates::parse("a:b:1:test:x").is_err());
        assert!(Coordinates::parse("a/b:c:1").is_err());
        let broken = apply("<project><dependencies></project>", "install", &coordinates("a:b:1")).unwrap_err();
        assert!(broken.contains("not well-formed"), "{broken}");
        let none = apply("<settings/>", "install", &coordinates("a:b:1")).unwrap_err();
        assert!(none.contains("no <project>"), "{none}");
    }
}

//! What a unit is in each grammar: which node kinds are functions, methods, classes, impls and
//! modules, where their names and bodies are, and which nodes attach to the unit below them.
//! The walk itself (`code`) is the same for every language.
//!
//! Function bodies are never entered: a closure or nested function is part of its function's
//! chunk. Containers (classes, impls, traits, modules) are, to find their methods.

use turbo_syntax::tree_sitter::Node;

use super::ChunkKind;
use super::language::Grammar;

/// A unit found among a container's children.
pub(super) struct Unit<'t> {
    /// The whole declaration, with wrappers such as `export` or Python decorators: its lines
    /// are the chunk's.
    pub outer: Node<'t>,
    pub kind: ChunkKind,
    pub name: Option<String>,
    /// Where the signature ends; without one the signature ends at the first `{` or newline.
    pub body: Option<Node<'t>>,
    /// For containers, the node whose children may be units, and whether functions among them
    /// are methods.
    pub members: Option<(Node<'t>, bool)>,
    /// A Go method's receiver type, added to its scope.
    pub receiver: Option<String>,
}

/// What the chunker knows of each grammar's trees.
pub(super) trait Units {
    /// Comments, attributes and decorators: they belong to the unit right below them.
    fn attaches(self, kind: &str) -> bool;
    /// The children of a container's body that may be units.
    fn members<'t>(self, body: Node<'t>) -> Vec<Node<'t>>;
    /// The unit `node` is, if any. `in_type`: `node` is a member of a class, impl, trait or
    /// interface, so a function there is a method.
    fn unit<'t>(self, node: Node<'t>, src: &str, in_type: bool) -> Option<Unit<'t>>;
}

impl Units for Grammar {
    fn attaches(self, kind: &str) -> bool {
        match self {
            Grammar::Rust => matches!(kind, "line_comment" | "block_comment" | "attribute_item"),
            Grammar::Java => matches!(kind, "line_comment" | "block_comment"),
            Grammar::JavaScript | Grammar::TypeScript | Grammar::Tsx => matches!(kind, "comment" | "decorator"),
            Grammar::Python | Grammar::Go => kind == "comment",
        }
    }

    fn members<'t>(self, body: Node<'t>) -> Vec<Node<'t>> {
        let mut cursor = body.walk();
        let mut out = Vec::new();
        for child in body.named_children(&mut cursor) {
            // A Java enum's methods sit in a node after its constants.
            if self == Grammar::Java && child.kind() == "enum_body_declarations" {
                let mut inner = child.walk();
                out.extend(child.named_children(&mut inner));
            } else {
                out.push(child);
            }
        }
        out
    }

    fn unit<'t>(self, node: Node<'t>, src: &str, in_type: bool) -> Option<Unit<'t>> {
        match self {
            Grammar::Rust => rust(node, src, in_type),
            Grammar::Python => python(node, src, in_type),
            Grammar::JavaScript | Grammar::TypeScript | Grammar::Tsx => script(node, src, in_type),
            Grammar::Go => go(node, src),
            Grammar::Java => java(node, src),
        }
    }
}

fn function_kind(in_type: bool) -> ChunkKind {
    if in_type { ChunkKind::Method } else { ChunkKind::Function }
}

fn leaf<'t>(node: Node<'t>, kind: ChunkKind, name: Option<String>) -> Unit<'t> {
    Unit { outer: node, kind, name, body: node.child_by_field_name("body"), members: None, receiver: None }
}

fn container<'t>(node: Node<'t>, kind: ChunkKind, name: Option<String>, methods: bool) -> Unit<'t> {
    let body = node.child_by_field_name("body");
    Unit { outer: node, kind, name, body, members: body.map(|b| (b, methods)), receiver: None }
}

/// The text of `node`'s `field` child, whitespace collapsed.
fn field_text(node: Node<'_>, field: &str, src: &str) -> Option<String> {
    node.child_by_field_name(field).and_then(|n| text(n, src))
}

pub(super) fn text(node: Node<'_>, src: &str) -> Option<String> {
    let raw = src.get(node.byte_range())?;
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!collapsed.is_empty()).then_some(collapsed)
}

fn rust<'t>(node: Node<'t>, src: &str, in_type: bool) -> Option<Unit<'t>> {
    let name = || field_text(node, "name", src);
    Some(match node.kind() {
        "function_item" => leaf(node, function_kind(in_type), name()),
        "macro_definition" => leaf(node, ChunkKind::Function, name()),
        "struct_item" | "enum_item" | "union_item" => leaf(node, ChunkKind::Class, name()),
        "trait_item" => container(node, ChunkKind::Class, name(), true),
        "impl_item" => container(
            node,
            ChunkKind::Impl,
            node.child_by_field_name("type").and_then(|t| rust_type_name(t, src)),
            true,
        ),
        // `mod foo;` is a declaration, left with the module code.
        "mod_item" if node.child_by_field_name("body").is_some() => container(node, ChunkKind::Module, name(), false),
        _ => return None,
    })
}

/// The name of an impl's type without generics or paths: `Vec` for `std::vec::Vec<T>`.
fn rust_type_name(mut node: Node<'_>, src: &str) -> Option<String> {
    // A loop, not recursion: `&&&&T` nests as deep as the input likes.
    loop {
        let next = match node.kind() {
            "generic_type" | "reference_type" | "pointer_type" => node.child_by_field_name("type"),
            "scoped_type_identifier" => node.child_by_field_name("name"),
            _ => None,
        };
        match next {
            Some(inner) => node = inner,
            None => return text(node, src),
        }
    }
}

fn python<'t>(node: Node<'t>, src: &str, in_type: bool) -> Option<Unit<'t>> {
    match node.kind() {
        "function_definition" => Some(leaf(node, function_kind(in_type), field_text(node, "name", src))),
        "class_definition" => Some(container(node, ChunkKind::Class, field_text(node, "name", src), true)),
        "decorated_definition" => {
            let definition = node.child_by_field_name("definition")?;
            // The decorators' lines belong to the unit; its signature starts at `def`/`class`.
            Some(Unit { outer: node, ..python(definition, src, in_type)? })
        }
        _ => None,
    }
}

const FUNCTION_VALUES: &[&str] = &["arrow_function", "function_expression", "function", "generator_function"];

/// JavaScript, TypeScript and TSX.
fn script<'t>(node: Node<'t>, src: &str, in_type: bool) -> Option<Unit<'t>> {
    let name = || field_text(node, "name", src);
    Some(match node.kind() {
        "function_declaration" | "generator_function_declaration" => leaf(node, ChunkKind::Function, name()),
        "class_declaration" | "abstract_class_declaration" | "class" => container(node, ChunkKind::Class, name(), true),
        "interface_declaration" | "enum_declaration" => leaf(node, ChunkKind::Class, name()),
        "internal_module" | "module" => container(node, ChunkKind::Module, name(), false),
        "method_definition" => leaf(node, ChunkKind::Method, name()),
        // `handle = () => {...}` in a class body.
        "field_definition" | "public_field_definition" if in_type => {
            let value = node.child_by_field_name("value").filter(|v| FUNCTION_VALUES.contains(&v.kind()))?;
            let name = field_text(node, "property", src).or_else(name);
            Unit { body: value.child_by_field_name("body"), ..leaf(node, ChunkKind::Method, name) }
        }
        // `const add = (a, b) => ...`: a function bound to one name.
        "lexical_declaration" | "variable_declaration" => {
            let mut cursor = node.walk();
            let mut declarators = node.named_children(&mut cursor).filter(|c| c.kind() == "variable_declarator");
            let (declarator, None) = (declarators.next()?, declarators.next()) else { return None };
            let value = declarator.child_by_field_name("value").filter(|v| FUNCTION_VALUES.contains(&v.kind()))?;
            let name = field_text(declarator, "name", src);
            Unit { body: value.child_by_field_name("body"), ..leaf(node, ChunkKind::Function, name) }
        }
        // `module.exports.parse = function (...) {...}`, `Foo.prototype.bar = ...`.
        "expression_statement" => {
            let inner = node.named_child(0)?;
            match inner.kind() {
                "assignment_expression" => {
                    let value = inner.child_by_field_name("right").filter(|v| FUNCTION_VALUES.contains(&v.kind()))?;
                    let name = field_text(inner, "left", src);
                    Unit { body: value.child_by_field_name("body"), ..leaf(node, ChunkKind::Function, name) }
                }
                // TypeScript parses `namespace Foo {}` as a statement.
                "internal_module" => Unit { outer: node, ..script(inner, src, in_type)? },
                _ => return None,
            }
        }
        "export_statement" => {
            if let Some(declaration) = node.child_by_field_name("declaration") {
                Unit { outer: node, ..script(declaration, src, in_type)? }
            } else {
                // `export default function () {}`, `export default class {}`.
                let value = node.child_by_field_name("value")?;
                let kind = match value.kind() {
                    "class" => ChunkKind::Class,
                    k if FUNCTION_VALUES.contains(&k) => ChunkKind::Function,
                    _ => return None,
                };
                let name = field_text(value, "name", src).or_else(|| Some("default".to_owned()));
                let body = value.child_by_field_name("body");
                let members = (kind == ChunkKind::Class).then_some(body.map(|b| (b, true))).flatten();
                Unit { outer: node, kind, name, body, members, receiver: None }
            }
        }
        // `declare module "x" {...}`, `declare class Foo {...}`.
        "ambient_declaration" => {
            let declaration = node.named_child(0)?;
            Unit { outer: node, ..script(declaration, src, in_type)? }
        }
        _ => return None,
    })
}

fn go<'t>(node: Node<'t>, src: &str) -> Option<Unit<'t>> {
    let name = || field_text(node, "name", src);
    Some(match node.kind() {
        "function_declaration" => leaf(node, ChunkKind::Function, name()),
        "method_declaration" => {
            let receiver = node.child_by_field_name("receiver").and_then(|r| go_receiver(r, src));
            Unit { receiver, ..leaf(node, ChunkKind::Method, name()) }
        }
        // `type Point struct {...}`; a `type (...)` group stays with the module code.
        "type_declaration" => {
            let mut cursor = node.walk();
            let mut specs = node.named_children(&mut cursor).filter(|c| matches!(c.kind(), "type_spec" | "type_alias"));
            let (spec, None) = (specs.next()?, specs.next()) else { return None };
            leaf(node, ChunkKind::Class, field_text(spec, "name", src))
        }
        _ => return None,
    })
}

/// `Point` for a receiver `(p *Point)` or `(l *List[T])`.
fn go_receiver(parameters: Node<'_>, src: &str) -> Option<String> {
    let mut cursor = parameters.walk();
    let parameter = parameters.named_children(&mut cursor).find(|c| c.kind() == "parameter_declaration")?;
    let mut ty = parameter.child_by_field_name("type")?;
    loop {
        let next = match ty.kind() {
            "pointer_type" | "parenthesized_type" => ty.named_child(0),
            "generic_type" => ty.child_by_field_name("type"),
            _ => None,
        };
        match next {
            Some(inner) => ty = inner,
            None => return text(ty, src),
        }
    }
}

fn java<'t>(node: Node<'t>, src: &str) -> Option<Unit<'t>> {
    let name = || field_text(node, "name", src);
    Some(match node.kind() {
        "class_declaration"
        | "interface_declaration"
        | "enum_declaration"
        | "record_declaration"
        | "annotation_type_declaration" => container(node, ChunkKind::Class, name(), true),
        // Abstract and interface methods (no body) stay with their type.
        "method_declaration" | "constructor_declaration" | "compact_constructor_declaration"
            if node.child_by_field_name("body").is_some() =>
        {
            leaf(node, ChunkKind::Method, name())
        }
        _ => return None,
    })
}

/// Where a unit's signature starts: after decorators, attributes and annotations, which are
/// part of its lines but not of its declaration.
pub(super) fn signature_start(outer: Node<'_>) -> usize {
    let skip = |kind: &str| {
        matches!(
            kind,
            "decorator"
                | "annotation"
                | "marker_annotation"
                | "attribute_item"
                | "comment"
                | "line_comment"
                | "block_comment"
        )
    };
    let mut cursor = outer.walk();
    for child in outer.children(&mut cursor) {
        if skip(child.kind()) {
            continue;
        }
        if child.kind() == "modifiers" {
            let mut inner = child.walk();
            match child.children(&mut inner).find(|m| !skip(m.kind())) {
                Some(modifier) => return modifier.start_byte(),
                // Only annotations: the declaration starts after them.
                None => continue,
            }
        }
        return child.start_byte();
    }
    outer.start_byte()
}

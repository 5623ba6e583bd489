//! Chunking through the public API: per language, the units with their kinds, symbols, scopes,
//! signatures and exact line ranges; Markdown sections; text windows; skipped files; files that
//! do not parse; a property test that no input panics and every chunk is whole lines of its
//! file; and a real crate from the local cargo registry.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use turbo_knowledge::{Chunk, ChunkKind, Chunked, Chunker, Fallback, Language, Limits, SkipReason, sha256_hex};

/// One line per chunk: `kind symbol [scope] start-end | signature`.
fn summary(chunks: &[Chunk]) -> Vec<String> {
    chunks
        .iter()
        .map(|c| {
            let signature = c.signature.as_deref().map(|s| format!(" | {s}")).unwrap_or_default();
            let symbol = c.symbol.as_deref().unwrap_or("-");
            format!("{} {symbol} [{}] {}-{}{signature}", c.kind, c.scope.join(" > "), c.start_line, c.end_line)
        })
        .collect()
}

/// Checks what holds for every outcome: chunks are whole lines of the file, hashed, in order,
/// and together hold every line that has a letter or digit in it.
fn assert_well_formed(path: &str, bytes: &[u8], chunked: &Chunked) {
    let Chunked::Chunks { chunks, .. } = chunked else { return };
    let text = std::str::from_utf8(bytes).expect("only UTF-8 files are chunked");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut covered = vec![false; lines.len()];
    for chunk in chunks {
        assert!(
            1 <= chunk.start_line && chunk.start_line <= chunk.end_line && chunk.end_line <= lines.len(),
            "{path}: lines {}-{} outside 1-{}",
            chunk.start_line,
            chunk.end_line,
            lines.len()
        );
        assert_eq!(chunk.content, lines[chunk.start_line - 1..chunk.end_line].concat(), "{path}");
        assert_eq!(chunk.content_hash, sha256_hex(chunk.content.as_bytes()));
        assert_eq!(chunk.path, path);
        assert!(!chunk.content.trim().is_empty(), "{path}: blank chunk");
        covered[chunk.start_line - 1..chunk.end_line].iter_mut().for_each(|c| *c = true);
    }
    assert!(chunks.windows(2).all(|w| w[0].start_line <= w[1].start_line), "{path}: chunks out of order");
    for (index, line) in lines.iter().enumerate() {
        if line.chars().any(char::is_alphanumeric) {
            assert!(covered[index], "{path}: line {} ({line:?}) is in no chunk", index + 1);
        }
    }
}

/// The chunks of a file expected to chunk cleanly.
fn chunks(path: &str, text: &str) -> Vec<Chunk> {
    let chunked = Chunker::default().chunk(path, text.as_bytes());
    assert_well_formed(path, text.as_bytes(), &chunked);
    match chunked {
        Chunked::Chunks { chunks, fallback: None } => {
            let language = Language::from_path(path);
            assert!(chunks.iter().all(|c| c.language == language));
            chunks
        }
        other => panic!("{path}: expected clean chunks, got {other:?}"),
    }
}

fn skip_reason(path: &str, bytes: &[u8], limits: Limits) -> SkipReason {
    match Chunker::new(limits).chunk(path, bytes) {
        Chunked::Skip { reason } => reason,
        other => panic!("{path}: expected a skip, got {other:?}"),
    }
}

const RUST: &str = r##"//! Geometry helpers.

use std::fmt;

const ORIGIN: Point = Point { x: 0.0, y: 0.0 };

/// A point in the plane.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    /// Creates a point.
    pub fn new(x: f64, y: f64) -> Self {
        Point { x, y }
    }

    pub fn distance(&self, other: &Point) -> f64 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

pub trait Shape {
    fn area(&self) -> f64;

    fn describe(&self) -> String {
        format!("a shape of area {}", self.area())
    }
}

pub mod shapes {
    use super::Point;

    pub struct Circle {
        pub center: Point,
        pub radius: f64,
    }

    impl<T> super::Shape for Circle<T>
    where
        T: Copy,
    {
        fn area(&self) -> f64 {
            std::f64::consts::PI * self.radius * self.radius
        }
    }
}

pub fn midpoint(a: Point, b: Point) -> Point {
    Point::new((a.x + b.x) / 2.0, (a.y + b.y) / 2.0)
}

macro_rules! square {
    ($x:expr) => {
        $x * $x
    };
}
"##;

const PYTHON: &str = r##""""Inventory management."""

import dataclasses
from typing import Optional

DEFAULT_QUANTITY = 1


def parse_sku(text: str) -> Optional[str]:
    """Returns the SKU in `text`, if any."""
    text = text.strip()
    return text or None


class Inventory:
    """Items in stock."""

    class Item:
        def __init__(self, sku: str, quantity: int = DEFAULT_QUANTITY):
            self.sku = sku
            self.quantity = quantity

    def __init__(self):
        self.items = {}

    @property
    def size(self) -> int:
        return len(self.items)

    async def restock(
        self, sku: str, quantity: int
    ) -> None:
        item = self.items.setdefault(sku, Inventory.Item(sku, 0))
        item.quantity += quantity


if __name__ == "__main__":
    print(parse_sku(" abc "))
"##;

const JAVASCRIPT: &str = r##"import { readFile } from "node:fs/promises";

const RETRIES = 3;

/**
 * Loads a JSON config file.
 */
export async function loadConfig(path) {
  const text = await readFile(path, "utf8");
  return JSON.parse(text);
}

export class Cache {
  constructor(limit) {
    this.limit = limit;
    this.entries = new Map();
  }

  get(key) {
    return this.entries.get(key);
  }

  onEvict = (key) => {
    this.entries.delete(key);
  };
}

const double = (x) => x * 2;

module.exports.triple = function (x) {
  return x * 3;
};
"##;

const TYPESCRIPT: &str = r##"import type { Request } from "./http";

export interface Route {
  method: string;
  path: string;
}

export enum Method {
  Get = "GET",
  Post = "POST",
}

export class Router<T> {
  private routes: Route[] = [];

  @logged
  add(route: Route): this {
    this.routes.push(route);
    return this;
  }

  match(req: Request): Route | undefined {
    return this.routes.find((r) => r.path === req.path);
  }
}

namespace Util {
  export function join(a: string, b: string): string {
    return `${a}/${b}`;
  }
}

export default function handler(req: Request): void {
  console.log(req);
}
"##;

const TSX: &str = r##"import React from "react";

type Props = { name: string };

export function Greeting({ name }: Props) {
  return <h1 className="greeting">Hello, {name}!</h1>;
}

export const Farewell = ({ name }: Props) => <p>Bye, {name}</p>;
"##;

const GO: &str = r##"package geometry

import (
	"fmt"
	"math"
)

// Point is a point in the plane.
type Point struct {
	X, Y float64
}

// Shape has an area.
type Shape interface {
	Area() float64
}

// Distance returns the distance between p and q.
func (p *Point) Distance(q Point) float64 {
	return math.Hypot(q.X-p.X, q.Y-p.Y)
}

func (p Point) String() string {
	return fmt.Sprintf("(%g, %g)", p.X, p.Y)
}

func (s *Stack[T]) Push(v T) {
	s.items = append(s.items, v)
}

func Midpoint(a, b Point) Point {
	return Point{(a.X + b.X) / 2, (a.Y + b.Y) / 2}
}
"##;

const JAVA: &str = r##"package com.example.bank;

import java.util.ArrayList;
import java.util.List;

/**
 * A bank account.
 */
public class Account {
    private final String owner;
    private long balance;

    public Account(String owner) {
        this.owner = owner;
    }

    @Override
    public String toString() {
        return owner + ": " + balance;
    }

    public void deposit(long amount) {
        if (amount <= 0) {
            throw new IllegalArgumentException("amount must be positive");
        }
        balance += amount;
    }

    static class Ledger {
        private final List<Long> entries = new ArrayList<>();

        void record(long amount) {
            entries.add(amount);
        }
    }
}

interface Auditable {
    List<String> audit();
}

enum Currency {
    EUR, USD;

    String symbol() {
        return this == EUR ? "€" : "$";
    }
}
"##;

const MARKDOWN: &str = r##"Intro text before any heading.

# Guide

Welcome.

## Install

Run the installer.

```sh
# not a heading
./install.sh
```

### From source

Build it yourself.

## Usage

Use it.

# Appendix

The end.
"##;

#[test]
fn rust_functions_structs_impls_traits_and_modules() {
    assert_eq!(
        summary(&chunks("src/geometry.rs", RUST)),
        [
            "module - [] 1-5",
            "class Point [] 7-12 | pub struct Point",
            "impl Point [] 14-23 | impl Point",
            "method new [Point] 15-18 | pub fn new(x: f64, y: f64) -> Self",
            "method distance [Point] 20-22 | pub fn distance(&self, other: &Point) -> f64",
            "impl Point [] 25-29 | impl fmt::Display for Point",
            "method fmt [Point] 26-28 | fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result",
            "class Shape [] 31-37 | pub trait Shape",
            "method describe [Shape] 34-36 | fn describe(&self) -> String",
            "module shapes [] 39-55 | pub mod shapes",
            "class Circle [shapes] 42-45 | pub struct Circle",
            "impl Circle [shapes] 47-54 | impl<T> super::Shape for Circle<T> where T: Copy",
            "method area [shapes > Circle] 51-53 | fn area(&self) -> f64",
            "function midpoint [] 57-59 | pub fn midpoint(a: Point, b: Point) -> Point",
            "function square [] 61-65 | macro_rules! square",
        ]
    );
    let chunks = chunks("src/geometry.rs", RUST);
    let new = chunks.iter().find(|c| c.symbol.as_deref() == Some("new")).unwrap();
    // The doc comment above a method is part of its chunk.
    assert_eq!(
        new.content,
        "    /// Creates a point.\n    pub fn new(x: f64, y: f64) -> Self {\n        Point { x, y }\n    }\n"
    );
    let point = &chunks[1];
    assert!(point.content.starts_with("/// A point in the plane.\n#[derive(Clone, Copy, Debug)]\npub struct Point {"));
}

#[test]
fn python_functions_classes_nested_classes_and_decorated_methods() {
    assert_eq!(
        summary(&chunks("inventory.py", PYTHON)),
        [
            "module - [] 1-6",
            "function parse_sku [] 9-12 | def parse_sku(text: str) -> Optional[str]",
            "class Inventory [] 15-34 | class Inventory",
            "class Item [Inventory] 18-21 | class Item",
            "method __init__ [Inventory > Item] 19-21 | def __init__(self, sku: str, quantity: int = DEFAULT_QUANTITY)",
            "method __init__ [Inventory] 23-24 | def __init__(self)",
            "method size [Inventory] 26-28 | def size(self) -> int",
            "method restock [Inventory] 30-34 | async def restock(self, sku: str, quantity: int) -> None",
            "module - [] 37-38",
        ]
    );
}

#[test]
fn javascript_functions_classes_and_functions_bound_to_names() {
    assert_eq!(
        summary(&chunks("web/cache.js", JAVASCRIPT)),
        [
            "module - [] 1-3",
            "function loadConfig [] 5-11 | export async function loadConfig(path)",
            "class Cache [] 13-26 | export class Cache",
            "method constructor [Cache] 14-17 | constructor(limit)",
            "method get [Cache] 19-21 | get(key)",
            "method onEvict [Cache] 23-25 | onEvict = (key) =>",
            "function double [] 28-28 | const double = (x) =>",
            "function module.exports.triple [] 30-32 | module.exports.triple = function (x)",
        ]
    );
}

#[test]
fn typescript_interfaces_enums_classes_namespaces_and_default_exports() {
    assert_eq!(
        summary(&chunks("src/router.ts", TYPESCRIPT)),
        [
            "module - [] 1-1",
            "class Route [] 3-6 | export interface Route",
            "class Method [] 8-11 | export enum Method",
            "class Router [] 13-25 | export class Router<T>",
            "method add [Router] 16-20 | add(route: Route): this",
            "method match [Router] 22-24 | match(req: Request): Route | undefined",
            "module Util [] 27-31 | namespace Util",
            "function join [Util] 28-30 | export function join(a: string, b: string): string",
            "function handler [] 33-35 | export default function handler(req: Request): void",
        ]
    );
}

#[test]
fn tsx_components_are_functions() {
    let chunks = chunks("src/Greeting.tsx", TSX);
    assert_eq!(
        summary(&chunks),
        [
            "module - [] 1-3",
            "function Greeting [] 5-7 | export function Greeting({ name }: Props)",
            "function Farewell [] 9-9 | export const Farewell = ({ name }: Props) =>",
        ]
    );
    assert!(chunks.iter().all(|c| c.language == Language::TypeScript));
}

#[test]
fn go_methods_are_scoped_by_their_receiver() {
    assert_eq!(
        summary(&chunks("geometry/point.go", GO)),
        [
            "module - [] 1-6",
            "class Point [] 8-11 | type Point struct",
            "class Shape [] 13-16 | type Shape interface",
            "method Distance [Point] 18-21 | func (p *Point) Distance(q Point) float64",
            "method String [Point] 23-25 | func (p Point) String() string",
            "method Push [Stack] 27-29 | func (s *Stack[T]) Push(v T)",
            "function Midpoint [] 31-33 | func Midpoint(a, b Point) Point",
        ]
    );
}

#[test]
fn java_classes_nested_classes_interfaces_and_enums() {
    assert_eq!(
        summary(&chunks("src/main/java/com/example/bank/Account.java", JAVA)),
        [
            "module - [] 1-4",
            "class Account [] 6-36 | public class Account",
            "method Account [Account] 13-15 | public Account(String owner)",
            "method toString [Account] 17-20 | public String toString()",
            "method deposit [Account] 22-27 | public void deposit(long amount)",
            "class Ledger [Account] 29-35 | static class Ledger",
            "method record [Account > Ledger] 32-34 | void record(long amount)",
            "class Auditable [] 38-40 | interface Auditable",
            "class Currency [] 42-48 | enum Currency",
            "method symbol [Currency] 45-47 | String symbol()",
        ]
    );
}

#[test]
fn markdown_sections_are_scoped_by_the_headings_above() {
    let chunks = chunks("docs/guide.md", MARKDOWN);
    assert_eq!(
        summary(&chunks),
        [
            "section - [] 1-1",
            "section Guide [] 3-5",
            "section Install [Guide] 7-14",
            "section From source [Guide > Install] 16-18",
            "section Usage [Guide] 20-22",
            "section Appendix [] 24-26",
        ]
    );
    // The `#` inside the code fence is not a heading.
    assert!(chunks[2].content.contains("# not a heading"));
}

/// A Rust impl of `methods` methods of `body` lines each, the last one `big_body` lines.
fn engine(methods: usize, body: usize, big_body: usize) -> String {
    let mut text = String::from("pub struct Engine;\n\nimpl Engine {\n    const SPEED: u32 = 3;\n\n");
    for m in 0..methods {
        let lines = if m + 1 == methods { big_body } else { body };
        text.push_str(&format!("    pub fn step_{m}(&mut self) -> u32 {{\n"));
        for l in 0..lines {
            text.push_str(&format!("        let v{l} = {l} * Self::SPEED;\n"));
        }
        text.push_str("        0\n    }\n\n");
    }
    text.push_str("}\n");
    text
}

#[test]
fn a_huge_method_is_split_with_overlap_and_keeps_symbol_and_scope() {
    let text = engine(2, 3, 300);
    let chunks = chunks("src/engine.rs", &text);
    assert_eq!(
        summary(&chunks),
        [
            "class Engine [] 1-1 | pub struct Engine",
            // Too big to be one chunk besides its methods: the impl keeps its header.
            "impl Engine [] 3-4 | impl Engine",
            "method step_0 [Engine] 6-11 | pub fn step_0(&mut self) -> u32",
            // Cut by bytes (about 34 a line, at most 4,000), overlapping by 10 lines; the
            // closing brace left over gets no part of its own.
            "method step_1 [Engine] 13-123 | pub fn step_1(&mut self) -> u32",
            "method step_1 [Engine] 114-218 | pub fn step_1(&mut self) -> u32",
            "method step_1 [Engine] 209-314 | pub fn step_1(&mut self) -> u32",
        ]
    );
    assert!(chunks[3..].iter().all(|c| c.content.len() <= 4000));
}

#[test]
fn a_class_that_fits_is_a_chunk_as_well_as_its_methods() {
    let text = engine(3, 2, 2);
    assert_eq!(
        summary(&chunks("src/engine.rs", &text)),
        [
            "class Engine [] 1-1 | pub struct Engine",
            "impl Engine [] 3-24 | impl Engine",
            "method step_0 [Engine] 6-10 | pub fn step_0(&mut self) -> u32",
            "method step_1 [Engine] 12-16 | pub fn step_1(&mut self) -> u32",
            "method step_2 [Engine] 18-22 | pub fn step_2(&mut self) -> u32",
        ]
    );
}

#[test]
fn text_is_cut_by_size_with_overlap() {
    let text: String = (1..=400).map(|i| format!("line {i}\n")).collect();
    let chunks = chunks("notes/log.txt", &text);
    assert_eq!(summary(&chunks), ["text - [] 1-150", "text - [] 141-290", "text - [] 281-400"]);
    assert!(chunks[1].content.starts_with("line 141\n"));
}

#[test]
fn unknown_extensions_are_text() {
    let chunks = chunks("config/app.toml", "[server]\nport = 8080\n");
    assert_eq!(summary(&chunks), ["text - [] 1-2"]);
    assert_eq!(chunks[0].language, Language::Text);
}

#[test]
fn binaries_invalid_utf8_oversized_and_minified_files_are_skipped_with_a_reason() {
    let limits = Limits::default;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01";
    assert_eq!(skip_reason("logo.png", png, limits()), SkipReason::Binary);
    // A binary with a source extension is still binary.
    assert_eq!(skip_reason("main.rs", b"fn main() {}\0\0", limits()), SkipReason::Binary);

    let latin1 = b"# R\xe9sum\xe9\n";
    let reason = skip_reason("README.md", latin1, limits());
    assert_eq!(reason, SkipReason::InvalidUtf8 { offset: 3 });
    assert_eq!(
        reason.to_string(),
        "skipped: not UTF-8 (invalid byte at offset 3); convert the file to UTF-8 to index it"
    );

    let big = "fn f() {}\n".repeat(120_000);
    let reason = skip_reason("big.rs", big.as_bytes(), limits());
    assert_eq!(reason, SkipReason::TooLarge { bytes: 1_200_000, limit: 1024 * 1024 });

    let bundle = format!("!function(e){{{}}}();\n", "var a=1;".repeat(1000));
    assert!(matches!(
        skip_reason("dist/app.js", bundle.as_bytes(), limits()),
        SkipReason::Minified { longest_line: 8017, .. }
    ));
    let dense: String = (0..50).map(|i| format!("var x{i}={};\n", "1+".repeat(300) + "1")).collect();
    assert!(matches!(skip_reason("gen.js", dense.as_bytes(), limits()), SkipReason::Minified { .. }));
    assert!(matches!(skip_reason("package-lock.json", b"{}", limits()), SkipReason::Generated { .. }));
}

#[test]
fn a_file_that_does_not_parse_is_chunked_as_text_with_a_reason() {
    let text = "This is not Python at all:\n  it is { prose } with ] brackets [ and\n$$ symbols %% everywhere\n";
    let chunked = Chunker::default().chunk("notes.py", text.as_bytes());
    assert_well_formed("notes.py", text.as_bytes(), &chunked);
    let Chunked::Chunks { chunks, fallback: Some(fallback) } = chunked else { panic!("no fallback: {chunked:?}") };
    assert!(
        matches!(fallback, Fallback::SyntaxErrors { language: Language::Python, whole_file: true, .. }),
        "{fallback:?}"
    );
    assert!(fallback.to_string().starts_with("chunked as plain text: the python parser found syntax errors"));
    assert_eq!(summary(&chunks), ["text - [] 1-3"]);
    assert_eq!(chunks[0].language, Language::Python);
}

#[test]
fn a_few_syntax_errors_keep_the_units_that_parse() {
    let text = "def ok():\n    return 1\n\n\ndef broken(:\n    pass\n\n\nclass Fine:\n    def method(self):\n        return 2\n";
    let chunked = Chunker::default().chunk("mixed.py", text.as_bytes());
    assert_well_formed("mixed.py", text.as_bytes(), &chunked);
    let Chunked::Chunks { chunks, fallback: Some(fallback) } = chunked else { panic!("no note: {chunked:?}") };
    assert!(matches!(fallback, Fallback::SyntaxErrors { first_error_line: 5, whole_file: false, .. }), "{fallback:?}");
    let summary = summary(&chunks);
    for unit in [
        "function ok [] 1-2 | def ok()",
        "class Fine [] 9-11 | class Fine",
        "method method [Fine] 10-11 | def method(self)",
    ] {
        assert!(summary.iter().any(|s| s == unit), "{unit} missing from {summary:#?}");
    }
}

const SNIPPETS: &[(&str, &str)] = &[
    ("a.rs", RUST),
    ("a.py", PYTHON),
    ("a.js", JAVASCRIPT),
    ("a.ts", TYPESCRIPT),
    ("a.tsx", TSX),
    ("a.go", GO),
    ("a.java", JAVA),
    ("a.md", MARKDOWN),
];

const EXTENSIONS: &[&str] = &["rs", "py", "js", "ts", "tsx", "go", "java", "md", "txt", "json"];

/// Limits small enough that the snippets exercise splitting and big containers.
fn tiny_limits() -> Limits {
    Limits { max_chunk_bytes: 120, max_chunk_lines: 6, overlap_lines: 2, ..Limits::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), ext in 0..EXTENSIONS.len()) {
        let path = format!("f.{}", EXTENSIONS[ext]);
        assert_well_formed(&path, &bytes, &Chunker::default().chunk(&path, &bytes));
    }

    #[test]
    fn arbitrary_code_like_text_is_whole_lines(
        text in "[a-z_(){}\\[\\];:,.=<>#/*'\"` \t\n-]{0,600}",
        ext in 0..EXTENSIONS.len(),
    ) {
        let path = format!("f.{}", EXTENSIONS[ext]);
        assert_well_formed(&path, text.as_bytes(), &Chunker::default().chunk(&path, text.as_bytes()));
        assert_well_formed(&path, text.as_bytes(), &Chunker::new(tiny_limits()).chunk(&path, text.as_bytes()));
    }

    #[test]
    fn edited_real_code_is_whole_lines(
        snippet in 0..SNIPPETS.len(),
        at in 0.0..1.0f64,
        delete in 0..60usize,
        insert in "[a-z{}()\\[\\]:;\"'\n ]{0,20}",
    ) {
        let (path, text) = SNIPPETS[snippet];
        let mut chars: Vec<char> = text.chars().collect();
        let start = ((chars.len() as f64) * at) as usize;
        let end = (start + delete).min(chars.len());
        chars.splice(start..end, insert.chars());
        let edited: String = chars.into_iter().collect();
        for chunker in [Chunker::default(), Chunker::new(tiny_limits())] {
            assert_well_formed(path, edited.as_bytes(), &chunker.chunk(path, edited.as_bytes()));
        }
    }
}

#[test]
fn snippets_are_whole_lines_under_tiny_limits() {
    for (path, text) in SNIPPETS {
        let chunked = Chunker::new(tiny_limits()).chunk(path, text.as_bytes());
        assert_well_formed(path, text.as_bytes(), &chunked);
        assert!(chunked.chunks().iter().all(|c| c.end_line + 1 - c.start_line <= 6 || c.content.lines().count() == 1));
    }
}

/// The newest `name-<version>` source directory in the local cargo registry.
fn registry_crate(name: &str) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    let prefix = format!("{name}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .flatten()
        .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten().flatten())
        .filter(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            file_name.strip_prefix(&prefix).is_some_and(|v| v.starts_with("1."))
        })
        .map(|entry| entry.path())
        .filter(|path| path.join("src/lib.rs").is_file())
        .collect();
    found.sort();
    found.pop()
}

#[test]
fn chunks_a_real_crate_from_the_cargo_registry() {
    let Some(root) = registry_crate("serde_json") else {
        eprintln!("skipping: no serde_json-1.* in the local cargo registry (run `cargo fetch` to get one)");
        return;
    };
    let scan = turbo_knowledge::scan(&root).expect("the crate directory can be walked");
    let chunker = Chunker::default();
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    for file in scan.files.iter().filter(|f| f.path.starts_with("src/")) {
        let bytes = std::fs::read(root.join(&file.path)).unwrap();
        let chunked = chunker.chunk(&file.path, &bytes);
        assert_well_formed(&file.path, &bytes, &chunked);
        if let Chunked::Chunks { fallback: Some(fallback @ Fallback::SyntaxErrors { whole_file: true, .. }), .. } =
            &chunked
        {
            panic!("{}: {fallback}", file.path);
        }
        all.extend(chunked.chunks().iter().cloned());
    }
    eprintln!("{}: {} chunks in {:?}", root.display(), all.len(), started.elapsed());

    let find = |path: &str, symbol: &str, kind: ChunkKind, scope: &[&str]| {
        all.iter()
            .find(|c| c.path == path && c.symbol.as_deref() == Some(symbol) && c.kind == kind && c.scope == scope)
            .unwrap_or_else(|| panic!("no {kind} {symbol} {scope:?} in {path}"))
    };
    let from_str = find("src/de.rs", "from_str", ChunkKind::Function, &[]);
    assert!(from_str.signature.as_deref().unwrap().starts_with("pub fn from_str<'a, T>(s: &'a str) -> Result<T>"));
    assert!(from_str.content.contains("pub fn from_str<'a, T>(s: &'a str)"));
    let to_string = find("src/ser.rs", "to_string", ChunkKind::Function, &[]);
    assert!(to_string.signature.as_deref().unwrap().starts_with("pub fn to_string<T>(value: &T) -> Result<String>"));
    let as_str = find("src/value/mod.rs", "as_str", ChunkKind::Method, &["Value"]);
    assert_eq!(as_str.signature.as_deref(), Some("pub fn as_str(&self) -> Option<&str>"));
    find("src/map.rs", "new", ChunkKind::Method, &["Map"]);
    assert!(all.iter().any(|c| c.kind == ChunkKind::Impl && c.signature.as_deref() == Some("impl Map<String, Value>")));
    assert!(all.len() > 500, "only {} chunks", all.len());
}

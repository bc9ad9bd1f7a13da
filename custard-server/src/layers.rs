//! The server's layers, checked against its sources (tests only).
//!
//! Every top-level module of `src/` belongs to one layer of [`LAYERS`], and
//! imports only modules of its own layer or of lower ones; [`APART`] names
//! modules of one layer that never import each other; and no top-level
//! modules import each other in a circle. A module's own submodules are
//! part of it (`web::ask` using `web::chart` is not an edge).
//!
//! Imports are the paths that start with `crate::` (in `use` trees too) or
//! climb out of a top-level module with `super::`, in code: comments,
//! string and character literals, and `#[cfg(test)]` items (and the files of
//! test modules) do not count, so a test may drive the whole app. Names the
//! crate root re-exports (`crate::AppState`) count as their module's.
//! `ARCHITECTURE.md` states the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first, and their top-level modules.
const LAYERS: &[(&str, &[&str])] = &[
    // The store knows nothing of the server above it: a second implementation
    // (PostgreSQL) needs only its trait and types.
    ("store", &["store"]),
    (
        "foundations",
        &[
            "auth",
            "config",
            "download",
            "error",
            "extract",
            "flash",
            "hashing",
            "hub",
            "mail",
            "metrics",
            "openapi",
            "pipelines",
            "rate_limit",
            "secrets",
            "serve",
        ],
    ),
    ("state", &["state"]),
    ("logic", &["accounts", "connections", "demo", "questions"]),
    ("surfaces", &["api", "mcp", "web"]),
    ("router", &["routes"]),
];

/// Modules of the same layer that must not import each other: the JSON API,
/// MCP and the web pages share logic, never handlers.
const APART: &[(&str, &str)] = &[("api", "web"), ("api", "mcp"), ("mcp", "web")];

/// One import of a top-level module by another, where it was first seen.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    /// `path:line` of its first occurrence.
    at: String,
}

/// What breaks the layering in `files` (paths relative to `src/`, with
/// their text); empty when nothing does.
fn check(files: &[(String, String)]) -> Vec<String> {
    let test_only = test_only_files(files);
    let kept: Vec<&(String, String)> =
        files.iter().filter(|(path, _)| !is_test_only(path, &test_only)).collect();
    let root = files
        .iter()
        .find(|(path, _)| path == "lib.rs")
        .map(|(_, text)| without_tests(&skeleton(text)))
        .unwrap_or_default();
    let reexports = root_reexports(&root);
    // The modules the root declares, and any file's.
    let mut modules: BTreeSet<String> = declared_modules(&root);
    let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for (path, text) in &kept {
        let module_path = module_path(path);
        let Some(top) = module_path.first() else { continue };
        modules.insert(top.clone());
        let code = without_tests(&skeleton(text));
        for (target, line) in imports(&code, &module_path) {
            let target = reexports.get(&target).cloned().unwrap_or(target);
            if &target == top {
                continue;
            }
            edges.entry((top.clone(), target.clone())).or_insert_with(|| Edge {
                from: top.clone(),
                to: target,
                at: format!("{path}:{line}"),
            });
        }
    }
    let layer_of = |module: &str| LAYERS.iter().position(|(_, ms)| ms.contains(&module));
    let mut problems = Vec::new();
    for module in &modules {
        if layer_of(module).is_none() {
            problems.push(format!("`{module}` is in no layer: add it to `layers::LAYERS`"));
        }
    }
    // Only edges between the crate's own modules (not `crate::SomeMacro`).
    let edges: Vec<Edge> = edges.into_values().filter(|e| modules.contains(&e.to)).collect();
    for edge in &edges {
        let (Some(from), Some(to)) = (layer_of(&edge.from), layer_of(&edge.to)) else { continue };
        if to > from {
            problems.push(format!(
                "`{}` ({}) imports `{}` ({}), a higher layer, at {}",
                edge.from, LAYERS[from].0, edge.to, LAYERS[to].0, edge.at
            ));
        }
        let apart =
            |a: &str, b: &str| APART.iter().any(|&(x, y)| (x == a && y == b) || (x == b && y == a));
        if apart(&edge.from, &edge.to) {
            problems.push(format!(
                "`{}` imports `{}`, which it must not, at {}",
                edge.from, edge.to, edge.at
            ));
        }
    }
    for cycle in cycles(&modules, &edges) {
        let at: Vec<&str> = edges
            .iter()
            .filter(|e| cycle.contains(&e.from) && cycle.contains(&e.to))
            .map(|e| e.at.as_str())
            .collect();
        problems.push(format!("modules import each other in a circle: {cycle:?} (at {at:?})"));
    }
    problems
}

/// The module path of a file under `src/`: `web/ask.rs` is `web::ask`,
/// `store/mod.rs` is `store`, `lib.rs` the root (empty).
fn module_path(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// Whether a file belongs to a test module (see [`test_only_files`]).
fn is_test_only(path: &str, test_only: &[String]) -> bool {
    path == "main.rs"
        || test_only.iter().any(|t| path == format!("{t}.rs") || path.starts_with(&format!("{t}/")))
}

/// The files (without `.rs`) and folders of modules declared under
/// `#[cfg(test)]` (`#[cfg(test)] mod tests;` in `store/mod.rs` is `store/tests`).
fn test_only_files(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let code = skeleton(text);
        let dir = module_path(path).join("/");
        let mut rest = code.as_str();
        while let Some(i) = rest.find("#[cfg(test)]") {
            rest = &rest[i + "#[cfg(test)]".len()..];
            let item: Vec<&str> = rest.split_whitespace().take(2).collect();
            if let ["mod", name] = item.as_slice()
                && let Some(name) = name.strip_suffix(';')
            {
                found.push(if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") });
            }
        }
    }
    found
}

/// `text` with comments, string literals and character literals blanked out
/// (their newlines kept, so lines still count); lifetimes stay.
fn skeleton(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c == 'r' || (c == 'b' && next == Some('r'))) && {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start.min(chars.len())..].iter().take_while(|&&h| h == '#').count();
            chars.get(start + hashes) == Some(&'"')
        } {
            // A raw string: r"..." or r#"..."#, with as many `#` to close.
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = chars[start..].iter().take_while(|&&h| h == '#').count();
            i = start + hashes + 1;
            out.push_str("\"\"");
            while i < chars.len() {
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#') {
                    let closing = chars[i + 1..].iter().take(hashes).count();
                    if closing == hashes {
                        i += 1 + hashes;
                        break;
                    }
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push_str("\"\"");
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Code (a [`skeleton`]) without its `#[cfg(test)]` items.
fn without_tests(code: &str) -> String {
    let mut code = code.to_owned();
    while let Some(start) = code.find("#[cfg(test)]") {
        let after = start + "#[cfg(test)]".len();
        let rest = &code[after..];
        // The item ends at its first `;` outside braces, or with its braced body.
        let mut depth = 0usize;
        let mut end = code.len();
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = after + i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = after + i + 1;
                    break;
                }
                _ => {}
            }
        }
        let lines = code[start..end].matches('\n').count();
        code.replace_range(start..end, &"\n".repeat(lines));
    }
    code
}

/// The code's tokens: identifiers, `::`, and single punctuation characters,
/// each with its line.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((chars[start..i].iter().collect(), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(("::".to_owned(), line));
            i += 2;
        } else {
            out.push((c.to_string(), line));
            i += 1;
        }
    }
    out
}

/// The top-level modules `code` (of the module at `module_path`) names:
/// `crate::x`, `crate::{x, y::z}` and `super::x` climbing to the root, each
/// with its line.
fn imports(code: &str, module_path: &[String]) -> Vec<(String, usize)> {
    let tokens = tokens(code);
    let token = |i: usize| tokens.get(i).map(|(t, _)| t.as_str());
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (word, line) = (&tokens[i].0, tokens[i].1);
        let macro_var = i > 0 && token(i - 1) == Some("$");
        let path_start = i == 0 || token(i - 1) != Some("::");
        if word == "crate" && !macro_var && path_start && token(i + 1) == Some("::") {
            found.extend(first_segments(&tokens, i + 2).into_iter().map(|m| (m, line)));
            i += 2;
        } else if word == "super" && path_start && token(i + 1) == Some("::") {
            let mut ups = 0;
            let mut j = i;
            while token(j) == Some("super") && token(j + 1) == Some("::") {
                ups += 1;
                j += 2;
            }
            // Only a climb out of a top-level module reaches another one.
            if ups >= module_path.len() {
                found.extend(first_segments(&tokens, j).into_iter().map(|m| (m, line)));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// The first path segments at token `i`: `x` of `x::...`, or each item's
/// first segment in a `{x, y::z}` group.
fn first_segments(tokens: &[(String, usize)], i: usize) -> Vec<String> {
    let Some((first, _)) = tokens.get(i) else { return Vec::new() };
    if first != "{" {
        return if first == "self" { Vec::new() } else { vec![first.clone()] };
    }
    let mut found = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (t, _) in &tokens[i..] {
        match t.as_str() {
            "{" => {
                depth += 1;
                item_start = depth == 1;
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => item_start = true,
            _ if depth == 1 && item_start => {
                if t != "self" {
                    found.push(t.clone());
                }
                item_start = false;
            }
            _ => {}
        }
    }
    found
}

/// The modules `code` declares (`mod x;`, `pub mod y;`).
fn declared_modules(code: &str) -> BTreeSet<String> {
    let tokens = tokens(code);
    tokens.windows(3).filter(|w| w[0].0 == "mod" && w[2].0 == ";").map(|w| w[1].0.clone()).collect()
}

/// Names the crate root re-exports, by the module they come from
/// (`pub use state::AppState;` maps `AppState` to `state`).
fn root_reexports(code: &str) -> BTreeMap<String, String> {
    let tokens = tokens(code);
    let mut found = BTreeMap::new();
    for (i, window) in tokens.windows(4).enumerate() {
        if window[0].0 != "pub" || window[1].0 != "use" || window[3].0 != "::" {
            continue;
        }
        let module = window[2].0.clone();
        let names = first_segments(&tokens, i + 4);
        for name in names {
            found.insert(name, module.clone());
        }
    }
    found
}

/// The sets of modules that import each other in a circle (strongly
/// connected components of more than one module, Tarjan's algorithm).
fn cycles(modules: &BTreeSet<String>, edges: &[Edge]) -> Vec<Vec<String>> {
    struct Search<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        counter: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.counter);
            self.low.insert(v, self.counter);
            self.counter += 1;
            self.stack.push(v);
            for w in self.next.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in edges {
        next.entry(e.from.as_str()).or_default().push(e.to.as_str());
    }
    let mut search = Search {
        next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        counter: 0,
        found: Vec::new(),
    };
    for m in modules {
        if !search.index.contains_key(m.as_str()) {
            search.visit(m);
        }
    }
    search.found
}

/// Every `.rs` file under `dir`, by its path relative to `root`.
fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("the source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension() == Some("rs".as_ref()) {
            let relative = path.strip_prefix(root).expect("under src").to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("a source file");
            out.push((relative.replace('\\', "/"), text));
        }
    }
}

/// The server's own sources keep the rules.
#[test]
fn the_server_keeps_its_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(files.len() > 40, "read the sources: {}", files.len());
    let problems = check(&files);
    assert!(problems.is_empty(), "the layering is broken:\n{}", problems.join("\n"));
}

/// What [`check`] says of a small crate of `files`.
fn check_files(files: &[(&str, &str)]) -> Vec<String> {
    let files: Vec<(String, String)> =
        files.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect();
    check(&files)
}

/// A case of the check: the files besides `lib.rs` (path, text), and what
/// the problems mention (no problem when empty).
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// The check finds each kind of break, and only real imports.
#[test]
fn the_check_finds_what_breaks_the_layers() {
    const LIB: &str = "mod api; mod state; mod store; mod web; mod routes; \
                       pub use state::AppState;";
    // (files besides lib.rs, what the problems mention; nothing when empty)
    let cases: &[Case<'_>] = &[
        // Downward imports only: fine.
        (
            &[
                ("routes.rs", "use crate::{api, web};"),
                ("api/mod.rs", "use crate::state::AppState;\nuse super::store;"),
                ("state.rs", "use crate::store::Store;"),
            ],
            &[],
        ),
        // Upward: the state imports the API, and they are in a circle.
        (
            &[("api/mod.rs", "use crate::state::AppState;"), ("state.rs", "use crate::api::x;")],
            &["`state` (state) imports `api` (surfaces)", "in a circle: [\"api\", \"state\"]"],
        ),
        // The API and the pages stay apart, in a group too.
        (&[("api/x.rs", "use crate::{store, web::page};")], &["`api` imports `web`"]),
        // `super::` out of a top-level module, at its line.
        (
            &[("store/mod.rs", "\nuse super::routes;")],
            &["imports `routes` (router), a higher layer, at store/mod.rs:2"],
        ),
        // A root re-export counts as its module.
        (&[("store/mod.rs", "fn f(_: crate::AppState) {}")], &["`store` (store) imports `state`"]),
        // Comments, strings and tests do not count.
        (
            &[
                (
                    "store/mod.rs",
                    "// crate::web\n/* crate::web */ const A: &str = \"crate::web\";\n\
                 const B: &str = r#\"crate::web\"#; const C: char = '\"';\n\
                 #[cfg(test)]\nmod tests { use crate::web; }\n#[cfg(test)]\nmod more;",
                ),
                ("store/more.rs", "use crate::routes;"),
            ],
            &[],
        ),
        // Submodules are part of their module.
        (&[("web/a.rs", "use super::b;\nuse crate::web::c;")], &[]),
        // A new module must be placed in a layer.
        (&[("gadget.rs", "")], &["`gadget` is in no layer"]),
    ];
    for (files, expected) in cases {
        let mut all = vec![("lib.rs", LIB)];
        all.extend_from_slice(files);
        let problems = check_files(&all);
        let text = problems.join("\n");
        if expected.is_empty() {
            assert!(problems.is_empty(), "{files:?}: {text}");
        }
        for wanted in *expected {
            assert!(text.contains(wanted), "{files:?}: wanted {wanted:?} in\n{text}");
        }
    }
}

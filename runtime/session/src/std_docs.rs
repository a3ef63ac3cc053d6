//! The docs of `std` items, for a notebook's inspect (Shift-Tab) and `?name`.
//!
//! A Rust user who inspects `Vec`, `HashMap::insert` or `Iterator::map` expects
//! what rust-analyzer's hover shows: the signature and the doc comment. evcxr's
//! analyzer does not offer hover, and asking rustdoc for JSON needs a nightly
//! compiler. The doc comments are in the toolchain's `rust-src` component, which
//! the analyzer needs for completion anyway, so they are read from there.
//!
//! An index of where each public type, trait, function and macro of `core`,
//! `alloc` and `std` is defined is built once, from a line scan of about 16 MB
//! of source (tens of milliseconds). A member (`Type::method`) is then found by
//! parsing only the file that defines its type, with `syn`, and looking through
//! the impls of that type or the items of that trait.

use proc_macro2::Span;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The crates of the standard library whose items are indexed, in the order a
/// name is looked for: `std` re-exports the other two.
const CRATES: [&str; 3] = ["std", "alloc", "core"];
/// The most doc lines an answer carries; the rest is a link away.
const MOST_DOC_LINES: usize = 60;

/// Methods a type gets through `Deref` from the type named second.
const DEREF_TARGETS: &[(&str, &str)] = &[("Vec", "[T]"), ("String", "str"), ("Box", "T")];

/// What inspecting a name found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdDoc {
    /// Where it is defined, e.g. `alloc::vec::Vec`.
    pub path: String,
    /// Its declaration, without the body.
    pub signature: String,
    /// Its doc comment, shortened to [`MOST_DOC_LINES`] lines.
    pub docs: String,
}

impl StdDoc {
    /// The answer as plain text: signature, then docs.
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n\n{}", self.path, self.signature, self.docs)
    }

    /// The answer as Markdown, as rustdoc writes doc comments.
    pub fn to_markdown(&self) -> String {
        format!("`{}`\n\n```rust\n{}\n```\n\n{}", self.path, self.signature, self.docs)
    }
}

/// Why std's docs cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum StdDocsError {
    /// The toolchain has no `rust-src`.
    #[error(
        "the docs of std items come from the toolchain's rust-src component, which is not installed \
         ({0} is missing); install it with `rustup component add rust-src`"
    )]
    NoRustSrc(PathBuf),
}

/// The standard library's sources and an index of its items.
pub struct StdDocs {
    library: PathBuf,
    index: OnceLock<HashMap<String, Vec<Definition>>>,
}

/// Where an item is defined: its file and the line of its declaration.
#[derive(Debug, Clone)]
struct Definition {
    file: PathBuf,
    line: usize,
}

impl StdDocs {
    /// The sources of the toolchain that `rustc` on PATH belongs to.
    pub fn for_toolchain() -> Result<StdDocs, StdDocsError> {
        let sysroot = std::process::Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        StdDocs::at(Path::new(&sysroot).join("lib/rustlib/src/rust/library"))
    }

    /// The sources under `library` (a `rust-src` checkout's `library` directory).
    pub fn at(library: PathBuf) -> Result<StdDocs, StdDocsError> {
        if !library.join("core/src/lib.rs").is_file() {
            return Err(StdDocsError::NoRustSrc(library));
        }
        Ok(StdDocs { library, index: OnceLock::new() })
    }

    /// Builds the index now rather than at the first lookup.
    pub fn warm_up(&self) {
        self.index();
    }

    /// The docs of `name`: `Vec`, `std::collections::HashMap`, `HashMap::insert`,
    /// `Iterator::map`, `std::mem::swap`, `println`. `None` if it is not a public
    /// item of `core`, `alloc` or `std`.
    pub fn lookup(&self, name: &str) -> Option<StdDoc> {
        let segments: Vec<&str> = name.trim_matches(':').split("::").filter(|s| !s.is_empty()).collect();
        let (last, rest) = segments.split_last()?;
        let last = last.trim_end_matches('!');
        if let Some((owner, modules)) = rest.split_last()
            && owner.starts_with(char::is_uppercase)
        {
            return self.member(owner, modules, last);
        }
        self.item(last, rest)
    }

    fn index(&self) -> &HashMap<String, Vec<Definition>> {
        self.index.get_or_init(|| {
            let mut index: HashMap<String, Vec<Definition>> = HashMap::new();
            for krate in CRATES {
                let mut files = Vec::new();
                collect_rs_files(&self.library.join(krate).join("src"), &mut files);
                files.sort();
                for file in files {
                    let Ok(text) = std::fs::read_to_string(&file) else { continue };
                    for (line, name) in declarations(&text) {
                        index.entry(name).or_default().push(Definition { file: file.clone(), line });
                    }
                }
            }
            index
        })
    }

    /// A type, trait, function or macro, preferring the definition whose module
    /// path holds the given modules (`collections` for `std::collections::HashMap`).
    fn item(&self, name: &str, modules: &[&str]) -> Option<StdDoc> {
        let definition = self.best_definition(name, modules)?;
        let text = std::fs::read_to_string(&definition.file).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let docs = doc_comment_above(&lines, definition.line);
        Some(StdDoc {
            path: format!("{}::{name}", self.module_path(&definition.file)),
            signature: declaration_at(&lines, definition.line),
            docs: shorten(&docs),
        })
    }

    fn best_definition(&self, name: &str, modules: &[&str]) -> Option<&Definition> {
        let found = self.index().get(name)?;
        let modules: Vec<&str> = modules.iter().copied().filter(|m| !CRATES.contains(m)).collect();
        let best = found.iter().enumerate().max_by_key(|(i, d)| {
            let path = d.file.to_string_lossy();
            let matching = modules.iter().filter(|m| path.contains(&format!("/{m}"))).count();
            // More matching modules first, then the first one indexed (`std` before `core`).
            (matching, std::cmp::Reverse(*i))
        });
        best.map(|(_, d)| d)
    }

    /// A method or associated item of a type or trait.
    fn member(&self, owner: &str, modules: &[&str], member: &str) -> Option<StdDoc> {
        let owner_definition = self.best_definition(owner, modules)?;
        let mut files = vec![owner_definition.file.clone()];
        // Impls often live beside the type (`vec/mod.rs` and `vec/*.rs`).
        if let Some(dir) = owner_definition.file.parent() {
            let mut siblings = Vec::new();
            collect_rs_files(dir, &mut siblings);
            siblings.sort();
            files.extend(siblings.into_iter().filter(|f| *f != owner_definition.file));
        }
        for file in &files {
            if let Some(doc) = self.member_in(file, owner, member) {
                return Some(doc);
            }
        }
        let (_, target) = DEREF_TARGETS.iter().find(|(from, _)| *from == owner)?;
        let file = match *target {
            "[T]" => self.library.join("core/src/slice/mod.rs"),
            "str" => self.library.join("core/src/str/mod.rs"),
            _ => return None,
        };
        self.member_in(&file, target, member)
    }

    /// `member` in the impls of `owner` (or the trait `owner`) in `file`.
    fn member_in(&self, file: &Path, owner: &str, member: &str) -> Option<StdDoc> {
        let text = std::fs::read_to_string(file).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let path = format!("{}::{owner}::{member}", self.module_path(file));
        let Ok(parsed) = syn::parse_file(&without_unstable_syntax(&text)) else {
            // Syntax syn does not know yet: the first such method in the file.
            let line = lines.iter().position(|l| {
                let l = l.trim_start().trim_start_matches("pub ").trim_start_matches("const ");
                l.strip_prefix("fn ").is_some_and(|r| identifier(r) == member)
            })?;
            let docs = doc_comment_above(&lines, line);
            return Some(StdDoc { path, signature: declaration_at(&lines, line), docs: shorten(&docs) });
        };
        let mut found = None;
        find_member(&parsed.items, owner, member, &mut found);
        let (span, attrs) = found?;
        let line = span.start().line.saturating_sub(1);
        Some(StdDoc { path, signature: declaration_at(&lines, line), docs: shorten(&doc_attributes(&attrs)) })
    }

    /// `alloc::vec` for `…/library/alloc/src/vec/mod.rs`.
    fn module_path(&self, file: &Path) -> String {
        let relative = file.strip_prefix(&self.library).unwrap_or(file);
        let mut parts: Vec<String> =
            relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
        parts.retain(|p| p != "src" && p != "mod" && p != "lib");
        parts.join("::")
    }
}

/// The `.rs` files under `dir`, tests and benches left out.
fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "tests" | "benches") {
                collect_rs_files(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// The public items a file declares: `(line index, name)`.
fn declarations(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut exported_macro = false;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[macro_export") {
            exported_macro = true;
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("macro_rules! ")
            && exported_macro
        {
            found.push((i, identifier(rest)));
        }
        if !trimmed.starts_with("#[") && !trimmed.starts_with("//") {
            exported_macro = false;
        }
        let Some(mut rest) = trimmed.strip_prefix("pub ") else { continue };
        // `pub const trait Iterator`, `pub unsafe auto trait Send`, `pub const fn`.
        while let Some(r) = ["const ", "unsafe ", "auto "].iter().find_map(|q| rest.strip_prefix(q)) {
            rest = r;
        }
        let Some((kind, rest)) = rest.split_once(' ') else { continue };
        // Items of a module, not methods: functions only at the top level.
        let is_item = matches!(kind, "struct" | "enum" | "trait" | "type" | "union") || kind == "fn" && indent == 0;
        let name = identifier(rest);
        if is_item && !name.is_empty() {
            found.push((i, name));
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// `text` with the unstable const-trait syntax std uses taken out, so that syn
/// parses it; lines keep their numbers.
fn without_unstable_syntax(text: &str) -> String {
    text.replace("const trait ", "trait ")
        .replace("impl const ", "impl ")
        .replace("[const] ", "")
        .replace("~const ", "")
}

/// The `///` lines right above line `at`, past its attributes.
fn doc_comment_above(lines: &[&str], at: usize) -> String {
    let mut docs = Vec::new();
    let mut i = at;
    let mut in_attribute = false;
    while i > 0 {
        i -= 1;
        let line = lines[i].trim();
        if let Some(doc) = line.strip_prefix("///") {
            docs.push(doc.strip_prefix(' ').unwrap_or(doc));
        } else if line.starts_with("#[") || line.ends_with(")]") || line.ends_with(']') && in_attribute {
            in_attribute = !line.starts_with("#[");
        } else if line.starts_with("//") || in_attribute || line.is_empty() && docs.is_empty() {
            continue;
        } else {
            break;
        }
    }
    docs.reverse();
    docs.join("\n")
}

/// The declaration starting at line `at`, up to its body or `;`.
fn declaration_at(lines: &[&str], at: usize) -> String {
    let mut out = Vec::new();
    for line in lines.iter().skip(at).take(12) {
        let body = line.find(" {").or_else(|| line.trim_start().starts_with('{').then(|| line.find('{')).flatten());
        if let Some(end) = body.or_else(|| line.find(';')) {
            out.push(line[..end].trim_end());
            break;
        }
        out.push(line.trim_end());
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    let indent = out.first().map_or(0, |l| l.len() - l.trim_start().len());
    out.iter().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect::<Vec<_>>().join("\n")
}

/// The doc attributes (`///` lines, as syn sees them) joined as text.
fn doc_attributes(attrs: &[syn::Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').map(str::to_string).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Looks through `items`, and the modules among them, for `member` in an impl
/// of `owner` (inherent impls first) or in the trait `owner`.
fn find_member(items: &[syn::Item], owner: &str, member: &str, found: &mut Option<(Span, Vec<syn::Attribute>)>) {
    let mut from_trait_impl = None;
    for item in items {
        match item {
            syn::Item::Impl(imp) if names_type(&imp.self_ty, owner) => {
                for impl_item in &imp.items {
                    let (ident, attrs, span) = match impl_item {
                        syn::ImplItem::Fn(f) => (&f.sig.ident, &f.attrs, f.sig.ident.span()),
                        syn::ImplItem::Const(c) => (&c.ident, &c.attrs, c.ident.span()),
                        _ => continue,
                    };
                    if ident == member {
                        let hit = (span, attrs.clone());
                        if imp.trait_.is_none() {
                            *found = Some(hit);
                            return;
                        }
                        from_trait_impl.get_or_insert(hit);
                    }
                }
            }
            syn::Item::Trait(t) if t.ident == owner => {
                for trait_item in &t.items {
                    let (ident, attrs, span) = match trait_item {
                        syn::TraitItem::Fn(f) => (&f.sig.ident, &f.attrs, f.sig.ident.span()),
                        syn::TraitItem::Type(ty) => (&ty.ident, &ty.attrs, ty.ident.span()),
                        syn::TraitItem::Const(c) => (&c.ident, &c.attrs, c.ident.span()),
                        _ => continue,
                    };
                    if ident == member {
                        *found = Some((span, attrs.clone()));
                        return;
                    }
                }
            }
            syn::Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    find_member(inner, owner, member, found);
                    if found.is_some() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
    if found.is_none() {
        *found = from_trait_impl;
    }
}

/// Whether an impl's self type is `owner` (`HashMap<K, V, S>`, `[T]`, `str`).
fn names_type(ty: &syn::Type, owner: &str) -> bool {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == owner),
        syn::Type::Slice(_) => owner == "[T]",
        _ => false,
    }
}

fn shorten(docs: &str) -> String {
    let lines: Vec<&str> = docs.lines().collect();
    if lines.len() <= MOST_DOC_LINES {
        return docs.trim_end().to_string();
    }
    format!("{}\n…", lines[..MOST_DOC_LINES].join("\n").trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> StdDocs {
        // The test setup installs rust-src (scripts/test); a user without it is told how.
        StdDocs::for_toolchain().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn types_members_traits_functions_and_macros_have_their_docs() {
        let docs = docs();
        let vec = docs.lookup("Vec").unwrap();
        assert_eq!(vec.path, "alloc::vec::Vec");
        assert!(vec.signature.starts_with("pub struct Vec<T"), "{}", vec.signature);
        assert!(vec.docs.contains("A contiguous growable array type"), "{}", vec.docs);

        let insert = docs.lookup("HashMap::insert").unwrap();
        assert!(insert.signature.contains("pub fn insert(&mut self, k: K, v: V) -> Option<V>"), "{}", insert.signature);
        assert!(insert.docs.contains("Inserts a key-value pair into the map"), "{}", insert.docs);
        assert_eq!(docs.lookup("std::collections::HashMap::insert").unwrap().signature, insert.signature);

        let map = docs.lookup("Iterator::map").unwrap();
        assert!(map.signature.contains("fn map<B, F>(self, f: F) -> Map<Self, F>"), "{}", map.signature);
        assert!(map.docs.contains("Takes a closure and creates an iterator"), "{}", map.docs);

        let iter = docs.lookup("Vec::iter").unwrap();
        assert!(iter.path.ends_with("slice::[T]::iter"), "methods through Deref: {}", iter.path);

        let swap = docs.lookup("std::mem::swap").unwrap();
        assert!(swap.docs.contains("Swaps the values at two mutable locations"), "{}", swap.docs);
        assert!(docs.lookup("println!").unwrap().docs.contains("Prints to the standard output"));
        assert!(docs.lookup("Option").unwrap().docs.contains("The `Option` type"));
        assert!(docs.lookup("NoSuchThingAnywhere").is_none());
        assert!(docs.lookup("Vec::no_such_method").is_none());
    }

    #[test]
    fn a_missing_rust_src_says_how_to_install_it() {
        let e = StdDocs::at(PathBuf::from("/nonexistent/library")).err().unwrap();
        assert!(e.to_string().contains("rustup component add rust-src"), "{e}");
    }

    #[test]
    fn declarations_and_doc_comments_are_read_from_source() {
        let text = "/// One.\n/// Two.\n#[stable(feature = \"x\",\n  since = \"1.0\")]\npub struct A<T> {\n    x: T,\n}\n\nimpl A {\n    pub fn method(&self) {}\n}\n#[macro_export]\nmacro_rules! shout {\n() => {};\n}\n";
        let found = declarations(text);
        assert_eq!(found, [(4, "A".to_string()), (12, "shout".to_string())]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(doc_comment_above(&lines, 4), "One.\nTwo.");
        assert_eq!(declaration_at(&lines, 4), "pub struct A<T>");
    }
}

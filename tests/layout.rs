//! The source tree keeps the layout docs/architecture.md describes ("The rules"): no import cycles
//! between modules (file by file), the generic parts know no experiment, and the experiments
//! know neither each other nor the commands. Read from the sources themselves: every
//! `crate::a::b` and `super::...` path names the module it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules every experiment and command may use, that must use none of them.
const GENERIC: [&str; 15] =
    ["backend", "data", "error", "estimator", "math", "nn", "plot", "png", "report", "rng", "run", "setup", "sweep", "train", "lib"];
const EXPERIMENTS: [&str; 2] = ["vae", "bandit"];
/// The commands and the composition root: they may use everything, nothing uses them but main.
const COMMANDS: [&str; 3] = ["app", "cli", "selftest"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: src/vae/step.rs → ["vae", "step"], src/run/mod.rs → ["run"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The modules a file's code names, resolved to the longest module path that exists.
fn uses(text: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    // Comments name modules too ("see crate::x"), and a file's unit tests (`mod tests { use
    // super::*; }`) are inside it; only the file's own code counts.
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    for (prefix, base) in [("crate::", Vec::new()), ("super::", me[..me.len().saturating_sub(1)].to_vec())] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: Vec<String> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let mut full = base.clone();
            full.extend(path);
            while !full.is_empty() && !modules.contains(&full) {
                full.pop();
            }
            if !full.is_empty() && full != me {
                found.insert(full);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    files
        .iter()
        .map(|f| {
            let me = module_of(&src, f);
            let used = uses(&std::fs::read_to_string(f).unwrap(), &me, &modules);
            (me, used)
        })
        .collect()
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let g = graph();
    // Depth-first search for a cycle; report it as a path.
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(n) {
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.clone(), 1);
        path.push(n.clone());
        for m in g.get(n).into_iter().flatten() {
            // A module's own children are parts of it (a mod.rs declares them); a child using its
            // parent's items is the edge that counts.
            if m.len() > n.len() && m.starts_with(n) {
                continue;
            }
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(cycle) = visit(n, &g, &mut state, &mut Vec::new()) {
            let shown: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("import cycle: {}", shown.join(" -> "));
        }
    }
    assert!(g.len() > 30, "the source tree was not read ({} modules)", g.len());
}

#[test]
fn generic_parts_know_no_experiment_and_experiments_know_neither_each_other_nor_the_commands() {
    let g = graph();
    let top = |m: &Vec<String>| m[0].clone();
    let mut violations = Vec::new();
    for (m, used) in &g {
        let from = top(m);
        for u in used {
            let to = top(u);
            let bad = (GENERIC.contains(&from.as_str()) && !GENERIC.contains(&to.as_str()))
                || (EXPERIMENTS.contains(&from.as_str())
                    && (COMMANDS.contains(&to.as_str()) || (EXPERIMENTS.contains(&to.as_str()) && to != from)));
            if bad {
                violations.push(format!("{} uses {}", m.join("::"), u.join("::")));
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

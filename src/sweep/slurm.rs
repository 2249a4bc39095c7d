//! The Slurm executor: a job array with one task per group of runs, written to OUT/sweep.sbatch
//! and submitted with `sbatch`. Each task runs this same command with `--task` added, as a job
//! step (`srun`), so that `scancel --signal`, preemption and the time limit's warning reach it.
//! A task stopped by a signal checkpoints its runs and exits with status 75; the script then
//! requeues it, and the requeued task continues them.

use std::path::Path;

use clap::Args;

use super::{GridOptions, Plan};
use crate::error::{Error, EXIT_INTERRUPTED};
use crate::run::files::write_atomically;
use crate::run::Description;

/// Seconds before the time limit at which Slurm signals a task to checkpoint and requeue.
pub const SIGNAL_BEFORE_LIMIT_S: u32 = 120;

#[derive(Args, Debug, Clone)]
pub struct SlurmOptions {
    /// Runs per task: each Slurm array task (or --task) trains this many runs in one process.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub runs_per_task: usize,

    /// Slurm partition of the tasks (sbatch --partition).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,

    /// Time limit of each task (sbatch --time, e.g. 4:00:00). Two minutes before it the task is
    /// signalled: its runs checkpoint, and it is requeued to continue them.
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,

    /// Generic resources of each task (sbatch --gres, e.g. gpu:1).
    #[arg(long, value_name = "LIST")]
    pub gres: Option<String>,

    /// One more #SBATCH line, e.g. --sbatch-arg=--cpus-per-task=4 (repeatable).
    #[arg(long, value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,

    /// With --executor slurm: write OUT/sweep.sbatch but do not submit it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Refuses values that would break the script's lines.
pub fn check(o: &SlurmOptions) -> Result<(), Error> {
    let named = [("--partition", &o.partition), ("--time", &o.time), ("--gres", &o.gres)];
    for (name, value) in named.iter().filter_map(|(n, v)| v.as_ref().map(|v| (n, v))) {
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(format!("{name} {}: must be one word", crate::error::quoted(value))));
        }
    }
    for a in &o.sbatch_arg {
        if !a.starts_with('-') || a.chars().any(|c| c.is_control()) {
            return Err(Error::Config(format!(
                "--sbatch-arg {}: must be one sbatch option on one line, e.g. --sbatch-arg=--cpus-per-task=4",
                crate::error::quoted(a)
            )));
        }
    }
    Ok(())
}

/// `s` quoted for the shell: in single quotes, each of its own written '\''.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job array's script: one task per `runs_per_task` runs of the grid, each running
/// `command` (this program and its arguments) with `--task` added.
pub fn script(d: &Description, tasks: usize, o: &SlurmOptions, out: &Path, workdir: &Path, command: &[String]) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("# Written by `hnca sweep {} --executor slurm`: one array task per {} run(s) of the grid.\n", d.name, o.runs_per_task);
    s += "# Submitting it again continues every unfinished run and skips finished ones.\n";
    s += &format!("#SBATCH --job-name=hnca-{}\n", d.name);
    s += &format!("#SBATCH --array=0-{}\n", tasks - 1);
    s += "#SBATCH --ntasks=1\n";
    s += &format!("#SBATCH --chdir={}\n", workdir.display());
    s += &format!("#SBATCH --output={}/slurm-%A_%a.out\n", out.display());
    s += "#SBATCH --open-mode=append\n";
    s += "#SBATCH --requeue\n";
    s += &format!("#SBATCH --signal=TERM@{SIGNAL_BEFORE_LIMIT_S}\n");
    for (flag, v) in [("partition", &o.partition), ("time", &o.time), ("gres", &o.gres)] {
        if let Some(v) = v {
            s += &format!("#SBATCH --{flag}={v}\n");
        }
    }
    for a in &o.sbatch_arg {
        s += &format!("#SBATCH {a}\n");
    }
    let words: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
    s += "\n";
    s += &format!("srun --ntasks=1 {} --task \"$SLURM_ARRAY_TASK_ID\"\n", words.join(" "));
    s += "status=$?\n";
    s += &format!("# {EXIT_INTERRUPTED}: a signal (the time limit near, preemption, scancel --signal=TERM) stopped the\n");
    s += "# runs after checkpointing them: requeue this task so that it continues them.\n";
    s += &format!("if [ \"$status\" -eq {EXIT_INTERRUPTED} ]; then\n");
    s += "    scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n";
    s += "fi\n";
    s += "exit \"$status\"\n";
    s
}

/// The command each task runs: this program, by its absolute path, with the sweep's arguments
/// as given, less `--dry-run`.
fn task_command(argv: &[std::ffi::OsString]) -> Result<Vec<String>, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Sweep(format!("cannot find this program's path for the script: {e}")))?;
    let mut words = vec![exe.to_str().ok_or_else(|| Error::Config("this program's path is not UTF-8".into()))?.to_string()];
    for a in argv.iter().skip(1) {
        let a = a.to_str().ok_or_else(|| Error::Config(format!("argument {a:?} is not UTF-8 and cannot go into a Slurm script")))?;
        if a != "--dry-run" {
            words.push(a.to_string());
        }
    }
    Ok(words)
}

/// Writes OUT/sweep.sbatch and, unless --dry-run, submits it; prints the job's id.
pub fn submit<A>(d: &Description, plan: &Plan<A>, g: &GridOptions, argv: &[std::ffi::OsString]) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&g.out).map_err(io(&g.out))?;
    let out = std::path::absolute(&g.out).map_err(io(&g.out))?;
    let workdir = std::env::current_dir().map_err(io(Path::new(".")))?;
    let path = g.out.join("sweep.sbatch");
    let text = script(d, plan.tasks, &g.slurm, &out, &workdir, &task_command(argv)?);
    write_atomically(&path, text.as_bytes())?;
    let what = format!("{} tasks of up to {} runs ({} runs)", plan.tasks, g.slurm.runs_per_task, plan.all.len());
    if g.slurm.dry_run {
        eprintln!("hnca sweep: wrote {} ({what}); submit it with: sbatch {}", path.display(), path.display());
        return Ok(());
    }
    let result = std::process::Command::new("sbatch").arg("--parsable").arg(&path).output();
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            return Err(Error::Sweep(format!(
                "sbatch could not be run ({e}): is this a Slurm cluster's login node? {} is written; --dry-run only writes it",
                path.display()
            )))
        }
    };
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(Error::Sweep(format!("sbatch {} failed ({}): {first}", path.display(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let job = stdout.trim().split(';').next().unwrap_or("").to_string();
    eprintln!("hnca sweep: submitted job array {job}: {what}; each task's output goes to {}/slurm-{job}_<task>.out", out.display());
    println!("{job}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("runs dir"), "'runs dir'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn one_word_options_and_sbatch_lines_are_checked() {
        let mut o =
            SlurmOptions { runs_per_task: 1, partition: Some("gpu".into()), time: None, gres: None, sbatch_arg: vec![], dry_run: false };
        check(&o).unwrap();
        o.time = Some("1:00\n#SBATCH --x".into());
        assert!(check(&o).is_err());
        o.time = None;
        o.sbatch_arg = vec!["cpus=4".into()];
        assert!(check(&o).is_err());
        o.sbatch_arg = vec!["--cpus-per-task=4".into()];
        check(&o).unwrap();
    }
}

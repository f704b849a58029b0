//! `rollcall repair catalog|grades`: what to run when the registry's catalog or the grade book
//! is damaged and its service refuses to start (or, for the grade book, fails its reads). The
//! service must be stopped. A store that opens is left alone; a damaged one is moved aside
//! (never deleted) and replaced by a new one holding everything still readable in it.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::serve::announce;

/// `rollcall repair`.
#[derive(Debug, Args)]
pub struct RepairCommand {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Debug, Subcommand)]
enum RepairWhat {
    /// The registry's catalog (`catalog.redb`): every instance still whole in it is kept.
    Catalog {
        /// The registry's data directory.
        #[arg(long, env = "ROLLCALL_DATA_DIR", default_value = "./rollcall-data/registry")]
        data_dir: PathBuf,
    },
    /// The grading service's book (`grades.db`): every student and grade still readable is kept.
    Grades {
        /// The grading service's data directory.
        #[arg(long, env = "ROLLCALL_GRADES_DATA_DIR", default_value = "./rollcall-data/grades")]
        data_dir: PathBuf,
    },
}

/// Runs the repair and says what it did on stdout.
pub async fn run(command: RepairCommand) -> anyhow::Result<()> {
    match command.what {
        RepairWhat::Catalog { data_dir } => {
            use rollcall_registry::store::Repair;
            match rollcall_registry::store::repair(&data_dir).await? {
                Repair::Missing => bail!("there is no catalog in {}", data_dir.display()),
                Repair::Sound { instances } => {
                    announce(&format!("the catalog opens ({instances} instances): nothing to repair"));
                }
                Repair::Rebuilt {
                    reason,
                    moved_to,
                    salvaged,
                } => announce(&format!(
                    "the catalog did not open ({reason}); it was moved to {} and a new one written with the {salvaged} instances still whole in it. Services missing from it register again: rollcall services by themselves, Go services when restarted.",
                    moved_to.display()
                )),
            }
        }
        RepairWhat::Grades { data_dir } => {
            use rollcall_grades::repair::Repair;
            let outcome =
                tokio::task::spawn_blocking(move || rollcall_grades::repair::repair(&data_dir).map(|r| (r, data_dir)))
                    .await??;
            match outcome {
                (Repair::Missing, dir) => bail!("there is no grade book in {}", dir.display()),
                (Repair::Sound, _) => announce("the grade book passes SQLite's check: nothing to repair"),
                (
                    Repair::Rebuilt {
                        reason,
                        moved_to,
                        students,
                        grades,
                    },
                    _,
                ) => announce(&format!(
                    "the grade book was damaged ({reason}); it was moved to {} and a new one written with the {students} students and {grades} grades still readable in it",
                    moved_to.display()
                )),
            }
        }
    }
    Ok(())
}

//! Checks one SQL statement with the custard-core guard and prints the verdict.
//!
//! ```sh
//! cargo run -p example-check-sql -- "SELECT * FROM orders"
//! ```

use std::process::ExitCode;

use custard_core::{Dialect, Guard};

fn main() -> ExitCode {
    let sql = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let guard = match Guard::builder(Dialect::Postgres).max_rows(100).build() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match guard.check(&sql) {
        Ok(checked) => {
            println!("allowed, will run: {checked}");
            ExitCode::SUCCESS
        }
        Err(rejection) => {
            println!("rejected ({}): {}", rejection.code, rejection.message);
            ExitCode::from(2)
        }
    }
}

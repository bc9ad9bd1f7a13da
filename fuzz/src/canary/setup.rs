//! The canary databases: a template with the tables, the catalog-only
//! canaries and the reading role's privileges, copied into two variants that
//! differ only in their canary values, so any result that depends on a value
//! the policy hides differs between them.
//!
//! Copies of one template share every object id, so `::regclass` and other
//! oid arithmetic give the same answers in both variants.

use std::time::Duration;

use custard_testkit::tokio_postgres::{self, Client, NoTls};

/// Rows of `public.secrets` (ids 1..=6, as in `ok_tbl`).
const SECRET_ROWS: i32 = 6;

/// What is secret in one variant: every canary string holds its nonce.
#[derive(Clone, Debug)]
pub(crate) struct Variant {
    /// The database's name.
    pub(crate) db: String,
    /// The nonce of this variant's data canaries.
    pub(crate) nonce: String,
}

/// The databases and role of one run; dropped (databases first) on drop.
#[derive(Debug)]
pub(crate) struct Databases {
    template: String,
    pub(crate) variants: [Variant; 2],
    /// The role queries run as: reads everything, not a superuser.
    pub(crate) role: String,
    /// The nonce of the catalog canaries both variants share (the role's
    /// name, the other schema's column and table names).
    pub(crate) shared_nonce: String,
}

/// A nonce of letters `g`..`z`: never produced by hex, digits or the
/// generator's literals, so finding it in a result means it leaked.
fn nonce(seed: &mut u64) -> String {
    (0..10)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'g' + ((*seed >> 33) % 20) as u8)
        })
        .collect()
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        format!(
            "PostgreSQL did not answer at {}: {e} (start it with scripts/ensure-postgres.sh or set \
             CUSTARD_TEST_DATABASE_URL)",
            custard_testkit::redact(url)
        )
    })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn run(client: &Client, sql: &str, what: &str) -> Result<(), String> {
    client.batch_execute(sql).await.map_err(|e| format!("{what}: {e:?}"))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The policy the fuzz's guard enforces, as the agent reads it from its
/// environment; in the mode without the guard's mask, PostgreSQL enforces it
/// through the privileges the agent prints for it.
fn agent_policy() -> custard_core::AccessPolicy {
    custard_core::AccessPolicy::new(
        Some(vec!["public".to_owned()]),
        Some(vec!["public.ok_tbl".to_owned(), "public.secrets".to_owned()]),
        vec!["public.secrets.secret".to_owned()],
    )
    .expect("a valid policy")
}

/// Exactly the SQL `custard-agent` prints when it refuses to start as `role`
/// on `db_url`'s database (its layer-4 privilege check), to be run by an
/// administrator.
async fn printed_privileges_sql(role_url: &str) -> Result<String, String> {
    let client = connect(role_url).await?;
    let report = custard_agent::privileges::check_policy(&client, &agent_policy())
        .await
        .map_err(|e| format!("the agent's privilege check: {e:?}"))?;
    if report.is_enforced() {
        return Err("the read-everything role already has the policy's privileges".to_owned());
    }
    Ok(report.fix_sql())
}

/// The template: tables, catalog-only canaries, the role's privileges.
fn template_sql(role: &str, shared: &str) -> String {
    let r = quote(role);
    let ok_rows: Vec<String> = (1..=SECRET_ROWS)
        .map(|k| format!("({k}, 'ok-name-{k}', 'ok-note-{}', 'ok-hint-{k}')", k % 3))
        .collect();
    let sql = format!(
        "CREATE TABLE public.ok_tbl (id int PRIMARY KEY, name text, note text, secret text);\n\
         INSERT INTO public.ok_tbl VALUES {};\n\
         CREATE TABLE public.secrets (id int PRIMARY KEY, name text, secret text);\n\
         CREATE TABLE public.forbidden (id int PRIMARY KEY, name text, note text);\n\
         CREATE SCHEMA other;\n\
         CREATE TABLE other.stuff (id int PRIMARY KEY, label text, canary_cat_col_{shared} text);\n\
         CREATE TABLE other.canary_cat_tbl_{shared} (id int);\n\
         GRANT USAGE ON SCHEMA public, other TO {r};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public, other TO {r};\n",
        ok_rows.join(", ")
    );
    sql
}

/// One variant's canary values: the second differs in every way a
/// predicate could notice (values, lengths, order, a NULL, row counts).
fn variant_sql(index: usize, nonce: &str) -> String {
    let second = index == 1;
    let secrets: Vec<String> = (1..=SECRET_ROWS)
        .map(|k| {
            let secret = if !second {
                format!("'CANARY-MASK-{nonce}-{k}'")
            } else if k == 3 {
                "NULL".to_owned()
            } else {
                format!("'CANARY-MASK-{nonce}-{}-long'", SECRET_ROWS + 1 - k)
            };
            format!("({k}, 's-name-{k}', {secret})")
        })
        .collect();
    let forbidden: Vec<String> = (1..=if second { 6 } else { 4 })
        .map(|k| {
            format!(
                "({k}, 'CANARY-FORBID-{nonce}-name-{k}', 'CANARY-FORBID-{nonce}-note-{}')",
                k % 2
            )
        })
        .collect();
    let stuff: Vec<String> = (1..=if second { 5 } else { 3 })
        .map(|k| format!("({k}, 'CANARY-OTHER-{nonce}-{k}', 'CANARY-OTHER-{nonce}-col-{k}')"))
        .collect();
    format!(
        "INSERT INTO public.secrets VALUES {};\n\
         INSERT INTO public.forbidden VALUES {};\n\
         INSERT INTO other.stuff VALUES {};\n\
         COMMENT ON TABLE public.forbidden IS 'CANARY-CAT-{nonce}-comment';\n\
         COMMENT ON COLUMN public.secrets.secret IS 'CANARY-CAT-{nonce}-column-comment';\n\
         COMMENT ON TABLE other.stuff IS 'CANARY-CAT-{nonce}-other-comment';\n\
         ANALYZE;\n",
        secrets.join(", "),
        forbidden.join(", "),
        stuff.join(", ")
    )
}

impl Databases {
    /// Creates the role, the template and both variants. `db_mask`: the
    /// template gets exactly the privileges `custard-agent` prints for its
    /// policy (so the role reads `public.secrets` only through column grants).
    pub(crate) async fn create(db_mask: bool) -> Result<Databases, String> {
        let admin_url = custard_testkit::test_database_url();
        let admin = connect(&admin_url).await?;
        let mut seed = crate::runner::clock_seed();
        let shared = nonce(&mut seed);
        let role = format!("canary_role_{shared}");
        let stem = format!(
            "custard_t_canary_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let variants = [
            Variant { db: format!("{stem}_a"), nonce: nonce(&mut seed) },
            Variant { db: format!("{stem}_b"), nonce: nonce(&mut seed) },
        ];
        let dbs = Databases { template: format!("{stem}_t"), variants, role, shared_nonce: shared };
        // From here on, dropping `dbs` cleans up whatever was made.
        let r = quote(&dbs.role);
        run(
            &admin,
            &format!(
                "CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS NOINHERIT"
            ),
            "creating the role",
        )
        .await?;
        let t = quote(&dbs.template);
        run(&admin, &format!("CREATE DATABASE {t}"), "creating the template").await?;
        {
            let client =
                connect(&custard_testkit::url_with_database(&admin_url, &dbs.template)).await?;
            run(&client, &template_sql(&dbs.role, &dbs.shared_nonce), "filling the template")
                .await?;
            if db_mask {
                let template_url = custard_testkit::url_with_database(&admin_url, &dbs.template);
                let as_role = custard_testkit::url_with_user(&template_url, &dbs.role);
                let fix = printed_privileges_sql(&as_role).await?;
                run(&client, &fix, "applying the privileges the agent prints").await?;
            }
        }
        for (i, v) in dbs.variants.iter().enumerate() {
            let d = quote(&v.db);
            // The template's last session may take a moment to end.
            let mut tries = 0;
            loop {
                match admin.batch_execute(&format!("CREATE DATABASE {d} TEMPLATE {t}")).await {
                    Ok(()) => break,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if tries == 50 {
                            return Err(format!("copying the template: {e:?}"));
                        }
                    }
                    Err(e) => return Err(format!("copying the template: {e:?}")),
                }
            }
            run(
                &admin,
                &format!(
                    "GRANT CONNECT ON DATABASE {d} TO {r};\n\
                     ALTER DATABASE {d} SET custard.canary = 'CANARY-SET-{}';",
                    v.nonce
                ),
                "configuring a variant",
            )
            .await?;
            let client = connect(&custard_testkit::url_with_database(&admin_url, &v.db)).await?;
            run(&client, &variant_sql(i, &v.nonce), "filling a variant").await?;
        }
        Ok(dbs)
    }

    /// The URL of variant `i` as the reading role.
    pub(crate) fn role_url(&self, i: usize) -> String {
        let url = custard_testkit::url_with_database(
            &custard_testkit::test_database_url(),
            &self.variants[i].db,
        );
        custard_testkit::url_with_user(&url, &self.role)
    }

    /// The nonces a leaked canary holds (lower case).
    pub(crate) fn nonces(&self) -> [String; 3] {
        [self.shared_nonce.clone(), self.variants[0].nonce.clone(), self.variants[1].nonce.clone()]
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for Databases {
    fn drop(&mut self) {
        let names: Vec<String> = self
            .variants
            .iter()
            .map(|v| v.db.clone())
            .chain(std::iter::once(self.template.clone()))
            .collect();
        let role = self.role.clone();
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let Ok(admin) = connect(&custard_testkit::test_database_url()).await else {
                    return;
                };
                for name in names {
                    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&name));
                    let _ = admin.batch_execute(&sql).await;
                }
                let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote(&role))).await;
            });
        })
        .join();
    }
}

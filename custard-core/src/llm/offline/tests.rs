//! Data-driven tests of the offline engine over a small shop schema: one line
//! per question with the exact SQL expected, or `ABSTAIN`.

use super::{OfflineEngine, write_sql};
use crate::llm::{GenerationRequest, LanguageModel, LlmErrorCode};
use crate::{Column, Dialect, ForeignKey, Guard, Schema, Table, TableKind};

const ABSTAIN: &str = "ABSTAIN";

fn column(name: &str, data_type: &str, samples: &[&str]) -> Column {
    Column {
        name: name.to_owned(),
        data_type: data_type.to_owned(),
        nullable: true,
        default: None,
        comment: None,
        sample_values: samples.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn fk(column: &str, schema: &str, table: &str) -> ForeignKey {
    ForeignKey {
        columns: vec![column.to_owned()],
        referenced_schema: schema.to_owned(),
        referenced_table: table.to_owned(),
        referenced_columns: vec!["id".to_owned()],
    }
}

/// customers, orders, products and order_items, in the dialect's default schema.
fn shop(dialect: Dialect) -> Schema {
    let s = dialect.default_schema();
    let (int, num, text, ts) = match dialect {
        Dialect::Postgres => ("integer", "numeric(10,2)", "text", "timestamp without time zone"),
        _ => ("INTEGER", "NUMERIC", "TEXT", "TIMESTAMP"),
    };
    let table = |name: &str, columns: Vec<Column>, pk: &[&str], fks: Vec<ForeignKey>| Table {
        schema: s.to_owned(),
        name: name.to_owned(),
        kind: TableKind::Table,
        comment: None,
        columns,
        primary_key: pk.iter().map(|c| (*c).to_owned()).collect(),
        foreign_keys: fks,
        row_estimate: None,
    };
    Schema {
        dialect,
        tables: vec![
            table(
                "customers",
                vec![
                    column("id", int, &[]),
                    column("name", text, &[]),
                    column("city", text, &["Paris", "London", "New York"]),
                    column("country", text, &["France", "UK", "USA"]),
                ],
                &["id"],
                vec![],
            ),
            table(
                "order_items",
                vec![
                    column("order_id", int, &[]),
                    column("product_id", int, &[]),
                    column("quantity", int, &[]),
                ],
                &["order_id", "product_id"],
                vec![fk("order_id", s, "orders"), fk("product_id", s, "products")],
            ),
            table(
                "orders",
                vec![
                    column("id", int, &[]),
                    column("customer_id", int, &[]),
                    column("total", num, &[]),
                    column("status", text, &["shipped", "pending", "cancelled"]),
                    column("created_at", ts, &[]),
                ],
                &["id"],
                vec![fk("customer_id", s, "customers")],
            ),
            table(
                "products",
                vec![
                    column("id", int, &[]),
                    column("name", text, &[]),
                    column("price", num, &[]),
                    column("category", text, &["Books", "Toys", "Garden"]),
                ],
                &["id"],
                vec![],
            ),
        ],
    }
}

/// Asks `question` in `dialect` and compares with `expected` (SQL or `ABSTAIN`);
/// every SQL produced must pass the guard with the schema known.
#[track_caller]
fn check(dialect: Dialect, question: &str, expected: &str) {
    let schema = shop(dialect);
    let got = write_sql(question, &schema, dialect);
    match (&got, expected) {
        (Err(_), ABSTAIN) => {}
        (Ok(sql), _) => {
            assert_eq!(sql, expected, "{question}");
            let guard = Guard::builder(dialect).schema(schema).build().expect("guard");
            if let Err(r) = guard.check(sql) {
                panic!("{question}: guard rejected {sql}: {}", r.message);
            }
        }
        (Err(e), _) => panic!("{question}: abstained ({}) instead of {expected}", e.reason),
    }
}

#[track_caller]
fn pg(question: &str, expected: &str) {
    check(Dialect::Postgres, question, expected);
}

#[track_caller]
fn lite(question: &str, expected: &str) {
    check(Dialect::Sqlite, question, expected);
}

#[test]
fn counts() {
    let cases = [
        ("How many customers are there?", "SELECT COUNT(*) AS customer_count FROM customers"),
        ("how many orders", "SELECT COUNT(*) AS order_count FROM orders"),
        ("Count the products", "SELECT COUNT(*) AS product_count FROM products"),
        (
            "What is the number of order items?",
            "SELECT COUNT(*) AS order_item_count FROM order_items",
        ),
        (
            "How many customers are in the database?",
            "SELECT COUNT(*) AS customer_count FROM customers",
        ),
        (
            "How many distinct countries are there?",
            "SELECT COUNT(DISTINCT country) AS country_count FROM customers",
        ),
        (
            "How many orders per status?",
            "SELECT status, COUNT(*) AS order_count FROM orders GROUP BY status ORDER BY order_count DESC",
        ),
        (
            "How many customers are in each city?",
            "SELECT city, COUNT(*) AS customer_count FROM customers GROUP BY city ORDER BY customer_count DESC",
        ),
        (
            "What is the number of customers in each country?",
            "SELECT country, COUNT(*) AS customer_count FROM customers GROUP BY country ORDER BY customer_count DESC",
        ),
        (
            "How many customers per country in ascending order",
            "SELECT country, COUNT(*) AS customer_count FROM customers GROUP BY country ORDER BY customer_count ASC",
        ),
        (
            "How many orders does each customer have?",
            "SELECT c.id, c.name, COUNT(*) AS order_count FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY order_count DESC",
        ),
        (
            "How many orders per customer city?",
            "SELECT c.city, COUNT(*) AS order_count FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.city ORDER BY order_count DESC",
        ),
        (
            "How many items are in order 7?",
            "SELECT COUNT(*) AS order_item_count FROM order_items WHERE order_id = 7",
        ),
    ];
    for (question, sql) in cases {
        pg(question, sql);
    }
}

#[test]
fn lists() {
    let cases = [
        ("List all customers", "SELECT id, name FROM customers"),
        ("Show me the orders", "SELECT * FROM orders"),
        (
            "List the names of customers in New York",
            "SELECT name FROM customers WHERE city ILIKE 'New York'",
        ),
        ("What are the customer names and cities?", "SELECT name, city FROM customers"),
        (
            "Which customers are from France?",
            "SELECT id, name FROM customers WHERE country ILIKE 'France'",
        ),
        (
            "Which customers are in London or Paris?",
            "SELECT id, name FROM customers WHERE (city ILIKE 'London' OR city ILIKE 'Paris')",
        ),
        ("List products alphabetically", "SELECT id, name FROM products ORDER BY name ASC"),
        (
            "List products in the Toys category sorted by price",
            "SELECT id, name FROM products WHERE category ILIKE 'Toys' ORDER BY price ASC",
        ),
        (
            "List products ordered by price descending",
            "SELECT id, name FROM products ORDER BY price DESC NULLS LAST",
        ),
        ("List the distinct cities of customers", "SELECT DISTINCT city FROM customers"),
        ("Customers named 'Alice'", "SELECT id, name FROM customers WHERE name ILIKE 'Alice'"),
        ("Customers with name 'Bob'", "SELECT id, name FROM customers WHERE name ILIKE 'Bob'"),
        ("Orders of customer 5", "SELECT * FROM orders WHERE customer_id = 5"),
        (
            "List orders with their customer names",
            "SELECT o.id, c.name FROM orders AS o JOIN customers AS c ON o.customer_id = c.id",
        ),
    ];
    for (question, sql) in cases {
        pg(question, sql);
    }
}

#[test]
fn aggregates() {
    let cases = [
        (
            "What is the average price of products?",
            "SELECT AVG(price) AS average_price FROM products",
        ),
        ("What is the highest price?", "SELECT MAX(price) AS max_price FROM products"),
        ("What is the minimum order total?", "SELECT MIN(total) AS min_total FROM orders"),
        ("What is the average total?", "SELECT AVG(total) AS average_total FROM orders"),
        (
            "What is the average quantity of order items?",
            "SELECT AVG(quantity) AS average_quantity FROM order_items",
        ),
        (
            "What is the average price of toys?",
            "SELECT AVG(price) AS average_price FROM products WHERE category ILIKE 'Toys'",
        ),
        (
            "What is the average product price per category?",
            "SELECT category, AVG(price) AS average_price FROM products GROUP BY category ORDER BY average_price DESC NULLS LAST",
        ),
        (
            "For each category, what is the average price?",
            "SELECT category, AVG(price) AS average_price FROM products GROUP BY category ORDER BY average_price DESC NULLS LAST",
        ),
        (
            "What is the maximum price per category?",
            "SELECT category, MAX(price) AS max_price FROM products GROUP BY category ORDER BY max_price DESC NULLS LAST",
        ),
        (
            "What is the total order total per customer name?",
            "SELECT c.name, SUM(o.total) AS total FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.name ORDER BY total DESC NULLS LAST",
        ),
        (
            "Sum of order totals per customer",
            "SELECT c.id, c.name, SUM(o.total) AS total FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY total DESC NULLS LAST",
        ),
        (
            "Total order total for customers in Paris",
            "SELECT SUM(o.total) AS total FROM orders AS o JOIN customers AS c ON o.customer_id = c.id WHERE c.city ILIKE 'Paris'",
        ),
        (
            "What is the total quantity per product?",
            "SELECT p.id, p.name, SUM(oi.quantity) AS total_quantity FROM order_items AS oi JOIN products AS p ON oi.product_id = p.id GROUP BY p.id, p.name ORDER BY total_quantity DESC NULLS LAST",
        ),
    ];
    for (question, sql) in cases {
        pg(question, sql);
    }
}

#[test]
fn rankings() {
    let cases = [
        (
            "Top 5 products by price",
            "SELECT id, name, price FROM products ORDER BY price DESC NULLS LAST LIMIT 5",
        ),
        (
            "Bottom 2 products by price",
            "SELECT id, name, price FROM products ORDER BY price ASC LIMIT 2",
        ),
        (
            "Which product has the highest price?",
            "SELECT id, name, price FROM products ORDER BY price DESC NULLS LAST LIMIT 1",
        ),
        (
            "What are the 3 products with the lowest price?",
            "SELECT id, name, price FROM products ORDER BY price ASC LIMIT 3",
        ),
        (
            "Which products have the highest price, from highest to lowest?",
            "SELECT id, name, price FROM products ORDER BY price DESC NULLS LAST",
        ),
        (
            "Top 5 cities by number of customers",
            "SELECT city, COUNT(*) AS customer_count FROM customers GROUP BY city ORDER BY customer_count DESC LIMIT 5",
        ),
        (
            "Which category has the most products?",
            "SELECT category, COUNT(*) AS product_count FROM products GROUP BY category ORDER BY product_count DESC LIMIT 1",
        ),
        (
            "Which customer has the most orders?",
            "SELECT c.id, c.name, COUNT(*) AS order_count FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY order_count DESC LIMIT 1",
        ),
        (
            "Top 3 customers by total order total",
            "SELECT c.id, c.name, SUM(o.total) AS total FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.id, c.name ORDER BY total DESC NULLS LAST LIMIT 3",
        ),
        (
            "What are the top 2 categories by average price? Return the category and the average price.",
            "SELECT category, AVG(price) AS average_price FROM products GROUP BY category ORDER BY average_price DESC NULLS LAST LIMIT 2",
        ),
        (
            "What are the top 3 cities by number of customers? Return the city, number of customers and total order total.",
            ABSTAIN,
        ),
        (
            "What are the top 3 statuses by total order total? Return the status, number of orders and total order total.",
            "SELECT status, SUM(total) AS total, COUNT(*) AS order_count FROM orders GROUP BY status ORDER BY total DESC NULLS LAST LIMIT 3",
        ),
    ];
    for (question, sql) in cases {
        pg(question, sql);
    }
}

#[test]
fn filters() {
    let cases = [
        (
            "How many orders are pending?",
            "SELECT COUNT(*) AS order_count FROM orders WHERE status ILIKE 'pending'",
        ),
        (
            "How many shipped orders?",
            "SELECT COUNT(*) AS order_count FROM orders WHERE status ILIKE 'shipped'",
        ),
        (
            "How many orders have the status 'pending'?",
            "SELECT COUNT(*) AS order_count FROM orders WHERE status ILIKE 'pending'",
        ),
        (
            "How many products in category books?",
            "SELECT COUNT(*) AS product_count FROM products WHERE category ILIKE 'Books'",
        ),
        (
            "How many orders from Paris?",
            "SELECT COUNT(*) AS order_count FROM orders AS o JOIN customers AS c ON o.customer_id = c.id WHERE c.city ILIKE 'Paris'",
        ),
        (
            "How many pending orders per customer?",
            "SELECT c.id, c.name, COUNT(*) AS order_count FROM orders AS o JOIN customers AS c ON o.customer_id = c.id WHERE o.status ILIKE 'pending' GROUP BY c.id, c.name ORDER BY order_count DESC",
        ),
        (
            "How many orders in 2024?",
            "SELECT COUNT(*) AS order_count FROM orders WHERE created_at >= '2024-01-01' AND created_at < '2025-01-01'",
        ),
    ];
    for (question, sql) in cases {
        pg(question, sql);
    }
}

#[test]
fn time_windows_in_both_dialects() {
    let cases = [
        (
            "How many orders were placed in the last 30 days?",
            "SELECT COUNT(*) AS order_count FROM orders WHERE created_at >= CURRENT_DATE - INTERVAL '30 days'",
            "SELECT COUNT(*) AS order_count FROM orders WHERE created_at >= date('now', '-30 days')",
        ),
        (
            "How many orders in the past week?",
            "SELECT COUNT(*) AS order_count FROM orders WHERE created_at >= CURRENT_DATE - INTERVAL '1 week'",
            "SELECT COUNT(*) AS order_count FROM orders WHERE created_at >= date('now', '-7 days')",
        ),
        (
            "Orders created in the last 2 weeks",
            "SELECT * FROM orders WHERE created_at >= CURRENT_DATE - INTERVAL '2 weeks'",
            "SELECT * FROM orders WHERE created_at >= date('now', '-14 days')",
        ),
        (
            "What is the total order total in the past 6 months?",
            "SELECT SUM(total) AS total FROM orders WHERE created_at >= CURRENT_DATE - INTERVAL '6 months'",
            "SELECT SUM(total) AS total FROM orders WHERE created_at >= date('now', '-6 months')",
        ),
        (
            "How many orders per status in the last 3 years?",
            "SELECT status, COUNT(*) AS order_count FROM orders WHERE created_at >= CURRENT_DATE - INTERVAL '3 years' GROUP BY status ORDER BY order_count DESC",
            "SELECT status, COUNT(*) AS order_count FROM orders WHERE created_at >= date('now', '-3 years') GROUP BY status ORDER BY order_count DESC",
        ),
    ];
    for (question, postgres, sqlite) in cases {
        pg(question, postgres);
        lite(question, sqlite);
    }
    // A calendar month is not a window, and customers have no date column.
    pg("How many orders last month?", ABSTAIN);
    lite("How many customers joined in the last 30 days?", ABSTAIN);
}

#[test]
fn sqlite_dialect() {
    let cases = [
        ("Show customers from Paris", "SELECT id, name FROM customers WHERE city LIKE 'Paris'"),
        (
            "Top 5 products by price",
            "SELECT id, name, price FROM products ORDER BY price DESC LIMIT 5",
        ),
        (
            "What is the average order total per customer country?",
            "SELECT c.country, AVG(o.total) AS average_total FROM orders AS o JOIN customers AS c ON o.customer_id = c.id GROUP BY c.country ORDER BY average_total DESC",
        ),
    ];
    for (question, sql) in cases {
        lite(question, sql);
    }
}

#[test]
fn abstains() {
    let cases = [
        // Words no table, column or value explains.
        "What is the revenue growth?",
        "Show me revenue",
        "What is the total revenue per customer?",
        "What are the 3 cheapest products?",
        "What is the most expensive product?",
        "Average order total by month",
        "How many different countries do customers come from?",
        "What is the most recent order?",
        "What is the earliest order date?",
        "How many Lyon customers?",
        "What is the average order total of Customer Paris?",
        "total order amount per customer name",
        // Negation, comparisons, ratios and several aggregates.
        "Customers who never ordered",
        "Customers without orders",
        "How many orders are not shipped?",
        "What percentage of orders are shipped?",
        "What is the ratio of orders to customers?",
        "How many customers have more than 5 orders?",
        "How many customers have at least 2 orders?",
        "Which customers ordered both books and toys?",
        "Which products cost between 10 and 20?",
        "Total and average order total",
        "How many orders and customers?",
        "When was the last order placed?",
        "Show the first 10 orders",
        "Last 5 orders",
        // Ambiguous or incomplete.
        "What is the total of orders?",
        "What is the total?",
        "Top customers",
        "Which products have the lowest price?",
        "List the names",
        "What is the average id?",
        "Customers per city",
        "Show the orders of customers from London",
        "How many orders per order?",
        "name 'Alice'",
        "How many orders has customer Alice?",
        "Products that have 'oo' in their name",
        "",
        "?",
        "How many orders were placed in the last 30 days? And how many were shipped?",
    ];
    for question in cases {
        pg(question, ABSTAIN);
    }
}

#[test]
fn abstaining_says_why_and_never_repairs() {
    let engine = OfflineEngine::new();
    assert_eq!(engine.name(), "offline");
    assert!(!engine.can_repair());
    let schema = shop(Dialect::Postgres);
    let ask = |question: &str| {
        let request = GenerationRequest {
            messages: &[],
            question,
            schema: &schema,
            history: &[],
            dialect: Dialect::Postgres,
        };
        ready(engine.generate(&request))
    };
    let err = ask("What is the revenue growth?").expect_err("abstains");
    assert_eq!(err.code, LlmErrorCode::Abstained);
    assert_eq!(
        err.message,
        "the offline engine could not tell which table or column 'revenue' means; \
         configure an LLM for questions like this"
    );
    let answer = ask("How many customers?").expect("answers");
    assert_eq!(answer.sql.as_deref(), Some("SELECT COUNT(*) AS customer_count FROM customers"));
}

/// Polls a future that never waits (the engine does no IO) to its end.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the offline engine never waits"),
    }
}

/// A schema with the glued, prefixed names some databases use (`sbTxCustId`)
/// and no declared foreign keys, as PostgreSQL reports it (folded to lower case).
fn glued() -> Schema {
    let table = |name: &str, columns: Vec<Column>, pk: &str| Table {
        schema: "public".to_owned(),
        name: name.to_owned(),
        kind: TableKind::Table,
        comment: None,
        columns,
        primary_key: vec![pk.to_owned()],
        foreign_keys: Vec::new(),
        row_estimate: None,
    };
    Schema {
        dialect: Dialect::Postgres,
        tables: vec![
            table(
                "sbcustomer",
                vec![
                    column("sbcustid", "character varying(20)", &[]),
                    column("sbcustname", "character varying(100)", &[]),
                    column("sbcustcountry", "character varying(50)", &["USA", "Canada"]),
                    column("sbcustaddress1", "character varying(200)", &[]),
                ],
                "sbcustid",
            ),
            table(
                "sbtransaction",
                vec![
                    column("sbtxid", "character varying(50)", &[]),
                    column("sbtxcustid", "character varying(20)", &[]),
                    column("sbtxamount", "numeric(10,2)", &[]),
                    column("sbtxstatus", "character varying(10)", &["success", "fail"]),
                ],
                "sbtxid",
            ),
        ],
    }
}

#[test]
fn glued_names_and_links_by_name() {
    let schema = glued();
    let cases = [
        (
            "How many customers per country?",
            "SELECT sbcustcountry, COUNT(*) AS customer_count FROM sbcustomer GROUP BY sbcustcountry ORDER BY customer_count DESC",
        ),
        ("What is the total transaction amount of successful transactions?", ABSTAIN),
        (
            "What is the total amount of transactions with status success?",
            "SELECT SUM(sbtxamount) AS total_amount FROM sbtransaction WHERE sbtxstatus ILIKE 'success'",
        ),
        (
            "Who are the top 2 customers by total transaction amount? Return their name and total amount.",
            "SELECT c.sbcustid, c.sbcustname, SUM(t.sbtxamount) AS total_amount FROM sbtransaction AS t JOIN sbcustomer AS c ON t.sbtxcustid = c.sbcustid GROUP BY c.sbcustid, c.sbcustname ORDER BY total_amount DESC NULLS LAST LIMIT 2",
        ),
    ];
    for (question, expected) in cases {
        let got = write_sql(question, &schema, Dialect::Postgres);
        match (got, expected) {
            (Err(_), ABSTAIN) => {}
            (Ok(sql), _) => {
                assert_eq!(sql, expected, "{question}");
                let guard = Guard::builder(Dialect::Postgres)
                    .schema(schema.clone())
                    .build()
                    .expect("guard");
                assert!(guard.check(&sql).is_ok(), "{sql}");
            }
            (Err(e), _) => panic!("{question}: abstained ({})", e.reason),
        }
    }
}

/// The shop with a few rows in a real SQLite database.
fn shop_database() -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
    conn.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT, country TEXT);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                              total NUMERIC, status TEXT, created_at TIMESTAMP);
         CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC, category TEXT);
         CREATE TABLE order_items (order_id INTEGER REFERENCES orders(id),
                                   product_id INTEGER REFERENCES products(id), quantity INTEGER,
                                   PRIMARY KEY (order_id, product_id));
         INSERT INTO customers VALUES (1, 'Alice', 'Paris', 'France'), (2, 'Bob', 'London', 'UK'),
                                      (3, 'Chloe', 'Paris', 'France');
         INSERT INTO orders VALUES
           (1, 1, 10.5, 'shipped', datetime('now', '-2 days')),
           (2, 1, 20, 'pending', datetime('now', '-40 days')),
           (3, 2, 5, 'shipped', datetime('now', '-400 days')),
           (4, 3, 7.5, 'cancelled', datetime('now', '-1 days'));
         INSERT INTO products VALUES (1, 'Atlas', 30, 'Books'), (2, 'Kite', 12, 'Toys'),
                                     (3, 'Rake', 18, 'Garden'), (4, 'Novel', 8, 'Books');
         INSERT INTO order_items VALUES (1, 1, 1), (1, 2, 3), (2, 4, 2), (3, 2, 1), (4, 3, 5);",
    )
    .expect("shop rows");
    conn
}

#[test]
fn answers_run_on_sqlite() {
    let conn = shop_database();
    let schema = shop(Dialect::Sqlite);
    let cases: &[(&str, &str)] = &[
        ("How many customers are there?", "3"),
        ("How many orders from Paris?", "3"),
        ("How many orders were placed in the last 30 days?", "2"),
        ("How many orders in the past 2 years?", "4"),
        ("What is the total order total for customers in paris?", "38"),
        ("What is the average price of books?", "19"),
        ("How many orders per customer?", "1|Alice|2; 2|Bob|1; 3|Chloe|1"),
        ("Which customer has the most orders?", "1|Alice|2"),
        ("Top 2 products by price", "1|Atlas|30; 3|Rake|18"),
        ("What is the total quantity per product name?", "Rake|5; Kite|4; Novel|2; Atlas|1"),
        // The sum of `total` is named `total` and sorted by the sum, not by a row's total.
        ("What is the total order total per status?", "pending|20; shipped|15.5; cancelled|7.5"),
        ("Which category has the most products?", "Books|2"),
        ("List the names of customers in London", "Bob"),
    ];
    for (question, expected) in cases {
        let sql = write_sql(question, &schema, Dialect::Sqlite)
            .unwrap_or_else(|e| panic!("{question}: abstained ({})", e.reason));
        let guard = Guard::builder(Dialect::Sqlite).schema(schema.clone()).build().expect("guard");
        let checked = guard.check(&sql).unwrap_or_else(|r| panic!("{sql}: {}", r.message));
        let mut stmt = conn.prepare(checked.sql()).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let width = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |row| {
                let cells: Result<Vec<String>, _> = (0..width)
                    .map(|i| {
                        row.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                            rusqlite::types::Value::Integer(n) => n.to_string(),
                            rusqlite::types::Value::Real(f) => format!("{f}"),
                            rusqlite::types::Value::Text(t) => t,
                            other => format!("{other:?}"),
                        })
                    })
                    .collect();
                cells.map(|c| c.join("|"))
            })
            .and_then(Iterator::collect)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows.join("; "), *expected, "{question}: {sql}");
    }
}

#[test]
fn metric_columns_have_plain_unique_names() {
    use super::catalog::Catalog;
    use super::lexer::AggFn::{Avg, Max, Sum};
    use super::sql::{Metric, Order, Output, Query};

    let schema = Schema {
        dialect: Dialect::Postgres,
        tables: vec![Table {
            schema: "public".to_owned(),
            name: "sales".to_owned(),
            kind: TableKind::Table,
            comment: None,
            columns: ["id", "region", "total_amount", "unit_price", "avg_rating", "quantity"]
                .iter()
                .map(|n| column(n, if *n == "region" { "text" } else { "numeric" }, &[]))
                .collect(),
            primary_key: vec!["id".to_owned()],
            foreign_keys: Vec::new(),
            row_estimate: None,
        }],
    };
    let cat = Catalog::new(&schema);
    let (region, total_amount, unit_price, avg_rating, quantity) =
        ((0, 1), (0, 2), (0, 3), (0, 4), (0, 5));
    let check = |select: Vec<Output>, expected: &str| {
        let mut q = Query::new(0);
        let ranked = select.iter().find_map(|o| match o {
            Output::Metric(m) => Some(*m),
            _ => None,
        });
        q.select = select;
        q.order = ranked.map(|m| (Order::Metric(m), super::lexer::Dir::Desc));
        let sql = q.to_sql(&cat, Dialect::Postgres);
        let select = sql.split(" FROM ").next().unwrap_or_default();
        assert_eq!(select, expected, "{sql}");
    };
    let metric = |m: Metric| Output::Metric(m);
    check(vec![metric(Metric::Agg(Sum, total_amount))], "SELECT SUM(total_amount) AS total_amount");
    check(
        vec![metric(Metric::Agg(Avg, total_amount))],
        "SELECT AVG(total_amount) AS average_total_amount",
    );
    check(vec![metric(Metric::Agg(Sum, quantity))], "SELECT SUM(quantity) AS total_quantity");
    check(vec![metric(Metric::Agg(Max, unit_price))], "SELECT MAX(unit_price) AS max_unit_price");
    check(vec![metric(Metric::Agg(Avg, avg_rating))], "SELECT AVG(avg_rating) AS avg_rating");
    check(vec![metric(Metric::Count)], "SELECT COUNT(*) AS sale_count");
    check(
        vec![Output::Column(region), metric(Metric::CountDistinct(region))],
        "SELECT region, COUNT(DISTINCT region) AS region_count",
    );
    // Taken names are not reused: by a column, or by another metric.
    check(
        vec![Output::Column(total_amount), metric(Metric::Agg(Sum, total_amount))],
        "SELECT total_amount, SUM(total_amount) AS sum_total_amount",
    );
    check(
        vec![Output::Star, metric(Metric::Agg(Avg, avg_rating))],
        "SELECT *, AVG(avg_rating) AS average_avg_rating",
    );
    check(
        vec![Output::Column(unit_price), metric(Metric::Agg(Avg, unit_price))],
        "SELECT unit_price, AVG(unit_price) AS average_unit_price",
    );
    let sql = {
        let mut q = Query::new(0);
        q.select = vec![metric(Metric::Agg(Sum, total_amount))];
        q.order = Some((Order::Metric(Metric::Agg(Sum, total_amount)), super::lexer::Dir::Desc));
        q.to_sql(&cat, Dialect::Sqlite)
    };
    assert!(sql.ends_with("ORDER BY total_amount DESC"), "{sql}");
}

#[test]
fn names_are_qualified_and_quoted_and_values_escaped() {
    let mut tier = column("Tier", "text", &["gold_plus", "O'Brien"]);
    tier.sample_values.push("silver".to_owned());
    let schema = Schema {
        dialect: Dialect::Postgres,
        tables: vec![Table {
            schema: "crm".to_owned(),
            name: "Accounts".to_owned(),
            kind: TableKind::Table,
            comment: None,
            columns: vec![column("id", "integer", &[]), column("Name", "text", &[]), tier],
            primary_key: vec!["id".to_owned()],
            foreign_keys: Vec::new(),
            row_estimate: None,
        }],
    };
    let cases = [
        (
            "How many accounts with tier gold_plus?",
            r#"SELECT COUNT(*) AS account_count FROM crm."Accounts" WHERE "Tier" = 'gold_plus'"#,
        ),
        (
            "List accounts in tier O'Brien",
            r#"SELECT id, "Name" FROM crm."Accounts" WHERE "Tier" ILIKE 'O''Brien'"#,
        ),
    ];
    let guard = Guard::builder(Dialect::Postgres)
        .schema(schema.clone())
        .search_path(["crm"])
        .build()
        .expect("guard");
    for (question, expected) in cases {
        let sql = write_sql(question, &schema, Dialect::Postgres)
            .unwrap_or_else(|e| panic!("{question}: abstained ({})", e.reason));
        assert_eq!(sql, expected, "{question}");
        assert!(guard.check(&sql).is_ok(), "{sql}");
    }
}

#[test]
fn no_keyword_phrase_hides_a_longer_one() {
    let phrases = super::lexer::phrases();
    for (i, (long, _)) in phrases.iter().enumerate() {
        let hidden_by = phrases[..i].iter().find(|(short, _)| long.starts_with(short));
        assert!(hidden_by.is_none(), "{long:?} comes after {:?}", hidden_by.map(|p| p.0));
    }
}

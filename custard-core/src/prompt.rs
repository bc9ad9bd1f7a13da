//! Chat prompts for text-to-SQL: rules, schema, instructions, examples,
//! conversation, question and (on a retry) the error to repair.

use std::fmt::Write;

use crate::Dialect;

/// Who speaks in a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person asking (or the pipeline speaking for them).
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in OpenAI-style chat APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into() }
    }
}

/// A question with the SQL that answers it, shown to the model as an example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The question.
    pub question: String,
    /// SQL that answers it.
    pub sql: String,
}

/// The examples most similar to `question`, best first, at most `max`.
///
/// Similarity is word overlap ([`crate::words`]: lowercase stems without stop
/// words) weighted by how rare each word is among the candidates, so "orders per
/// month in 2024" finds "how many orders per month" before "list all customers".
/// Candidates sharing no word with the question are left out; ties keep the
/// candidates' order, so callers list newer examples first.
///
/// ```
/// use custard_core::{Example, select_examples};
///
/// let candidates = [
///     Example { question: "list all customers".into(), sql: "SELECT * FROM customers".into() },
///     Example { question: "how many orders per month".into(), sql: "SELECT ...".into() },
/// ];
/// let picked = select_examples("orders per month in 2024", &candidates, 3);
/// assert_eq!(picked.len(), 1);
/// assert_eq!(picked[0].question, "how many orders per month");
/// ```
pub fn select_examples(question: &str, candidates: &[Example], max: usize) -> Vec<Example> {
    use std::collections::{HashMap, HashSet};

    let asked: HashSet<String> = crate::words(question).into_iter().collect();
    if asked.is_empty() || max == 0 {
        return Vec::new();
    }
    let bags: Vec<HashSet<String>> =
        candidates.iter().map(|c| crate::words(&c.question).into_iter().collect()).collect();
    let mut document_frequency: HashMap<&str, usize> = HashMap::new();
    for bag in &bags {
        for word in bag.iter().filter(|w| asked.contains(*w)) {
            *document_frequency.entry(word).or_default() += 1;
        }
    }
    let n = candidates.len() as f64;
    let mut scored: Vec<(f64, usize)> = bags
        .iter()
        .enumerate()
        .filter_map(|(i, bag)| {
            let shared: f64 = bag
                .iter()
                .filter_map(|w| document_frequency.get(w.as_str()))
                .map(|&df| (1.0 + n / df as f64).ln())
                .sum();
            // Long example questions match more words by chance; dampen them.
            (shared > 0.0).then(|| (shared / (bag.len() as f64).sqrt(), i))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(max).map(|(_, i)| candidates[i].clone()).collect()
}

/// An earlier turn of the conversation, so follow-ups ("and last year?") work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// What was asked.
    pub question: String,
    /// The SQL that answered it, if any.
    pub sql: Option<String>,
    /// The answer text shown, if any.
    pub answer: Option<String>,
}

/// A failed attempt fed back to the model so it can correct itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback {
    /// The model's previous reply.
    pub reply: String,
    /// What was wrong with it: the guard's rejection or the database's error.
    pub error: String,
}

/// Builds the chat messages for one question.
///
/// ```
/// use custard_core::{Dialect, PromptBuilder, Role};
///
/// let messages = PromptBuilder::new(Dialect::Postgres, "How many orders?")
///     .schema_ddl("CREATE TABLE orders (id integer PRIMARY KEY);")
///     .build();
/// assert_eq!(messages[0].role, Role::System);
/// assert!(messages[0].content.contains("CREATE TABLE orders"));
/// assert_eq!(messages.last().map(|m| m.content.as_str()), Some("How many orders?"));
/// ```
#[derive(Clone, Debug)]
pub struct PromptBuilder<'a> {
    dialect: Dialect,
    question: &'a str,
    schema_ddl: &'a str,
    instructions: Option<&'a str>,
    examples: &'a [Example],
    history: &'a [Turn],
    feedback: &'a [Feedback],
}

impl<'a> PromptBuilder<'a> {
    /// A prompt for `question` in `dialect`.
    pub fn new(dialect: Dialect, question: &'a str) -> Self {
        PromptBuilder {
            dialect,
            question,
            schema_ddl: "",
            instructions: None,
            examples: &[],
            history: &[],
            feedback: &[],
        }
    }

    /// The schema the model may use, as compact DDL (see [`crate::Retrieved`]).
    pub fn schema_ddl(mut self, ddl: &'a str) -> Self {
        self.schema_ddl = ddl;
        self
    }

    /// Business instructions for this database ("revenue means amount minus refunds").
    pub fn instructions(mut self, instructions: &'a str) -> Self {
        let trimmed = instructions.trim();
        self.instructions = (!trimmed.is_empty()).then_some(trimmed);
        self
    }

    /// Question/SQL pairs shown before the question.
    pub fn examples(mut self, examples: &'a [Example]) -> Self {
        self.examples = examples;
        self
    }

    /// The conversation so far, oldest first.
    pub fn history(mut self, history: &'a [Turn]) -> Self {
        self.history = history;
        self
    }

    /// Failed attempts at this question, oldest first.
    pub fn feedback(mut self, feedback: &'a [Feedback]) -> Self {
        self.feedback = feedback;
        self
    }

    /// The chat messages: system rules and schema, examples, conversation,
    /// question, then any feedback on failed attempts.
    pub fn build(&self) -> Vec<ChatMessage> {
        let mut messages = vec![ChatMessage::new(Role::System, self.system())];
        for example in self.examples {
            messages.push(ChatMessage::new(Role::User, example.question.trim()));
            messages.push(ChatMessage::new(Role::Assistant, fenced(&example.sql)));
        }
        for turn in self.history {
            messages.push(ChatMessage::new(Role::User, turn.question.trim()));
            let reply = match (&turn.sql, &turn.answer) {
                (Some(sql), Some(answer)) => format!("{}\n\n{}", fenced(sql), answer.trim()),
                (Some(sql), None) => fenced(sql),
                (None, Some(answer)) => answer.trim().to_owned(),
                (None, None) => "(no answer)".to_owned(),
            };
            messages.push(ChatMessage::new(Role::Assistant, reply));
        }
        messages.push(ChatMessage::new(Role::User, self.question.trim()));
        for failed in self.feedback {
            messages.push(ChatMessage::new(Role::Assistant, failed.reply.trim()));
            messages.push(ChatMessage::new(
                Role::User,
                format!(
                    "That query failed: {}\nWrite a corrected query that answers the same question. \
                     Reply with the SQL only.",
                    failed.error.trim()
                ),
            ));
        }
        messages
    }

    fn system(&self) -> String {
        let (db, dialect_rules) = match self.dialect {
            Dialect::Postgres => (
                "PostgreSQL",
                "- Qualify tables that are not in the public schema with their schema name.\n\
                 - Match text case-insensitively with ILIKE when the question does not give exact case.\n\
                 - Dates: use date_trunc, EXTRACT, CURRENT_DATE and INTERVAL; cast to numeric before ROUND(x, n).\n\
                 - Put NULLS LAST on descending ORDER BY of columns that may be NULL.",
            ),
            Dialect::Sqlite => (
                "SQLite",
                "- Dates are text or numbers: use date(), datetime(), strftime() and julianday().\n\
                 - There is no ILIKE: LIKE is already case-insensitive for ASCII text.",
            ),
        };
        let mut s = format!(
            "You are an expert {db} analyst. Write one read-only SQL query that answers the user's question.\n\
             \n\
             Rules:\n\
             - Reply with the SQL only, in a single ```sql code block, with no explanation.\n\
             - Write exactly one SELECT statement (WITH ... SELECT is fine). Never write INSERT, UPDATE, \
             DELETE, DDL, or anything that changes data, settings or locks.\n\
             - Use only the tables and columns of the schema below. Never invent a table or column name.\n\
             - When more than one table is used, give each an alias and qualify every column with it.\n\
             {dialect_rules}\n\
             - For rankings (\"top 5\"), order the rows and add LIMIT. Give computed columns readable aliases.\n\
             - A question may follow up on earlier ones (\"and last year?\"): keep their tables, filters and \
             meaning unless the new question changes them.\n\
             - If the schema cannot answer the question, reply with one line starting with \
             \"-- cannot answer:\" and the reason, and no SQL.\n"
        );
        if !self.schema_ddl.trim().is_empty() {
            let _ = write!(s, "\nSchema:\n```sql\n{}\n```\n", self.schema_ddl.trim());
        }
        if let Some(instructions) = self.instructions {
            let _ = write!(s, "\nInstructions for this database:\n{instructions}\n");
        }
        s
    }
}

fn fenced(sql: &str) -> String {
    format!("```sql\n{}\n```", sql.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(messages: &[ChatMessage]) -> String {
        messages
            .iter()
            .map(|m| format!("[{}]\n{}\n", m.role.as_str(), m.content))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn example(question: &str) -> Example {
        Example { question: question.into(), sql: format!("-- {question}") }
    }

    #[test]
    fn select_examples_prefers_rare_shared_words() {
        let candidates = [
            example("how many customers are there"),
            example("total revenue by product category"),
            example("how many orders were cancelled"),
            example("revenue per month for each category"),
        ];
        let picked = select_examples("monthly revenue by category", &candidates, 2);
        let questions: Vec<&str> = picked.iter().map(|e| e.question.as_str()).collect();
        assert_eq!(
            questions,
            ["total revenue by product category", "revenue per month for each category"]
        );
        assert!(select_examples("weather tomorrow", &candidates, 5).is_empty());
        assert!(select_examples("", &candidates, 5).is_empty());
        assert!(select_examples("revenue", &candidates, 0).is_empty());
        // Ties keep the candidates' order.
        let tied = select_examples("orders", &[example("orders"), example("Orders!")], 1);
        assert_eq!(tied[0].question, "orders");
    }

    const DDL: &str = "-- customers who bought something\nCREATE TABLE customers (\n  id integer PRIMARY KEY,\n  name text NOT NULL\n);\n\nCREATE TABLE sales.orders (\n  id integer PRIMARY KEY,\n  customer_id integer REFERENCES customers(id),\n  total numeric(10,2),\n  created_at timestamp -- when the order was placed\n);";

    #[test]
    fn first_question_postgres() {
        let m = PromptBuilder::new(Dialect::Postgres, "Top 5 customers by revenue")
            .schema_ddl(DDL)
            .instructions("Revenue is the sum of orders.total.")
            .build();
        insta::assert_snapshot!(render(&m));
    }

    #[test]
    fn follow_up_with_examples_sqlite() {
        let examples = [Example {
            question: "How many customers?".into(),
            sql: "SELECT count(*) FROM customers".into(),
        }];
        let history = [Turn {
            question: "Revenue this year?".into(),
            sql: Some(
                "SELECT sum(total) FROM orders WHERE created_at >= date('now', 'start of year')"
                    .into(),
            ),
            answer: Some("Revenue this year is 1,234.50.".into()),
        }];
        let m = PromptBuilder::new(Dialect::Sqlite, "and last year?")
            .schema_ddl(DDL)
            .examples(&examples)
            .history(&history)
            .build();
        insta::assert_snapshot!(render(&m));
    }

    #[test]
    fn repair_after_feedback() {
        let feedback = [Feedback {
            reply: "```sql\nSELECT nmae FROM customers\n```".into(),
            error: "column `nmae` does not exist in table `customers`; did you mean `name`?".into(),
        }];
        let m = PromptBuilder::new(Dialect::Postgres, "List customer names")
            .schema_ddl(DDL)
            .feedback(&feedback)
            .build();
        insta::assert_snapshot!(render(&m));
    }

    #[test]
    fn blank_instructions_are_left_out() {
        let m = PromptBuilder::new(Dialect::Postgres, "q").instructions("  \n").build();
        assert!(!m[0].content.contains("Instructions for this database"));
        assert!(!m[0].content.contains("Schema:"));
    }
}

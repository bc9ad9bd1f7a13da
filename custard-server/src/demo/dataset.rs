//! The demo shop database behind `custard-server --demo`: a small online shop
//! selling coffee, kitchen, home, stationery, outdoor and accessory goods over
//! the two years before a given day.
//!
//! The data is made up but shaped like a real shop's: signups and orders grow
//! over time, November and December are busy, a few customers buy often, recent
//! orders are still processing or shipped, and a few products got dearer a
//! year ago. It is the same for the same day (a fixed seed), and every order's
//! total is the sum of its items.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Datelike as _, Months, NaiveDate, Weekday};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rusqlite::{Connection, params};

/// The one seed: the same `today` always gives the same shop.
const SEED: u64 = 0x00C0_FFEE_5EED;

/// How many customers signed up over the two years.
const CUSTOMERS: usize = 260;

/// How many customers signed up in the shop's first week (its launch), so that
/// it has buyers from day one.
const LAUNCH_CUSTOMERS: usize = 20;

/// How many orders the shop takes over the two years, on average.
const EXPECTED_ORDERS: f64 = 4_000.0;

/// The share of customers who place their first order the day they sign up.
const FIRST_ORDER_SHARE: f64 = 0.6;

/// The share of customers who sign up and never order.
const NEVER_ORDER_SHARE: f64 = 0.1;

/// The shop's tables, with the foreign keys schema discovery reports.
///
/// Dates are ISO `YYYY-MM-DD` text declared `DATE`, so that models (and the
/// offline engine) know them for dates; money is `REAL` with two decimals.
const SCHEMA: &str = "
CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  email TEXT NOT NULL UNIQUE,
  city TEXT NOT NULL,
  country TEXT NOT NULL,
  signup_date DATE NOT NULL
);
CREATE TABLE products (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  category TEXT NOT NULL,
  unit_price REAL NOT NULL,
  in_stock INTEGER NOT NULL
);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  order_date DATE NOT NULL,
  status TEXT NOT NULL
    CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled', 'returned')),
  total_amount REAL NOT NULL
);
CREATE TABLE order_items (
  id INTEGER PRIMARY KEY,
  order_id INTEGER NOT NULL REFERENCES orders(id),
  product_id INTEGER NOT NULL REFERENCES products(id),
  quantity INTEGER NOT NULL CHECK (quantity > 0),
  unit_price REAL NOT NULL
);
CREATE INDEX orders_customer_id ON orders(customer_id);
CREATE INDEX orders_order_date ON orders(order_date);
CREATE INDEX order_items_order_id ON order_items(order_id);
CREATE INDEX order_items_product_id ON order_items(product_id);
";

/// Cities customers live in: (city, country, how many customers relative to the others).
const CITIES: &[(&str, &str, u32)] = &[
    ("Paris", "France", 10),
    ("Lyon", "France", 5),
    ("Berlin", "Germany", 9),
    ("Munich", "Germany", 5),
    ("Hamburg", "Germany", 4),
    ("Madrid", "Spain", 6),
    ("Barcelona", "Spain", 6),
    ("Milan", "Italy", 5),
    ("Rome", "Italy", 4),
    ("London", "United Kingdom", 10),
    ("Manchester", "United Kingdom", 4),
    ("Amsterdam", "Netherlands", 6),
    ("Dublin", "Ireland", 4),
    ("New York", "United States", 7),
    ("Toronto", "Canada", 4),
];

/// Customers' first names.
const FIRST_NAMES: &[&str] = &[
    "Emma", "Liam", "Olivia", "Noah", "Sophie", "Lucas", "Mia", "Leon", "Chloe", "Hugo", "Lea",
    "Louis", "Anna", "Jakob", "Clara", "Paul", "Sofia", "Mateo", "Lucia", "Pablo", "Giulia",
    "Marco", "Chiara", "Luca", "Amelia", "Oliver", "Isla", "Jack", "Grace", "Harry", "Fleur",
    "Daan", "Sanne", "Sem", "Aoife", "Sean", "Niamh", "Conor", "Ava", "Ethan", "Zoe", "Ryan",
    "Maya", "Nathan", "Ines", "Theo", "Elena", "David", "Laura", "Tom", "Hannah", "Felix", "Julia",
    "Max", "Nora", "Adam", "Alice", "Samuel", "Eva", "Daniel",
];

/// Customers' last names.
const LAST_NAMES: &[&str] = &[
    "Martin",
    "Bernard",
    "Dubois",
    "Moreau",
    "Laurent",
    "Lefebvre",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Becker",
    "Garcia",
    "Fernandez",
    "Lopez",
    "Martinez",
    "Sanchez",
    "Romero",
    "Rossi",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Romano",
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Wilson",
    "Evans",
    "de Jong",
    "Jansen",
    "de Vries",
    "Visser",
    "Murphy",
    "Kelly",
    "O'Brien",
    "Walsh",
    "Johnson",
    "Williams",
    "Miller",
    "Davis",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Hall",
    "Nguyen",
    "Chen",
    "Kowalski",
    "Novak",
    "Horvat",
    "Silva",
    "Costa",
    "Andersen",
];

/// Domains of customers' email addresses (reserved for examples, never real).
const EMAIL_DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];

/// The catalog: (name, category, price in cents, how often it sells relative to the others).
const PRODUCTS: &[(&str, &str, i64, u32)] = &[
    ("Ethiopia Yirgacheffe Beans 250g", "Coffee", 1290, 9),
    ("Colombia Huila Beans 250g", "Coffee", 1190, 10),
    ("House Espresso Blend 1kg", "Coffee", 3490, 7),
    ("Decaf Swiss Water Beans 250g", "Coffee", 1250, 4),
    ("Earl Grey Loose Leaf Tea 100g", "Coffee", 890, 6),
    ("Sencha Green Tea 100g", "Coffee", 990, 5),
    ("Pour-Over Coffee Dripper", "Coffee", 2400, 4),
    ("Hand Coffee Grinder", "Coffee", 5900, 3),
    ("Cast Iron Skillet 26cm", "Kitchen", 4490, 4),
    ("Chef's Knife 20cm", "Kitchen", 7900, 3),
    ("Olive Wood Cutting Board", "Kitchen", 3490, 4),
    ("Linen Tea Towels (Set of 3)", "Kitchen", 1990, 6),
    ("Stoneware Mixing Bowl", "Kitchen", 2900, 3),
    ("Glass Storage Jars (Set of 4)", "Kitchen", 2490, 4),
    ("Silicone Baking Mat", "Kitchen", 1290, 5),
    ("Enamel Dutch Oven 24cm", "Kitchen", 11900, 2),
    ("Fig and Cedar Soy Candle", "Home", 2200, 8),
    ("Linen Cushion Cover", "Home", 2900, 4),
    ("Wool Throw Blanket", "Home", 8900, 2),
    ("Small Ceramic Vase", "Home", 3200, 3),
    ("Large Ceramic Vase", "Home", 5400, 2),
    ("Cotton Bath Towel", "Home", 2490, 4),
    ("Vetiver Reed Diffuser", "Home", 2800, 4),
    ("Rattan Storage Basket", "Home", 3900, 3),
    ("Dot Grid Notebook A5", "Stationery", 1490, 9),
    ("Lined Notebook A5", "Stationery", 1490, 7),
    ("Weekly Planner", "Stationery", 2200, 5),
    ("Fountain Pen", "Stationery", 3900, 3),
    ("Blue-Black Ink Bottle", "Stationery", 1200, 3),
    ("Brass Pencil Sharpener", "Stationery", 990, 3),
    ("Greeting Cards (Pack of 6)", "Stationery", 1290, 5),
    ("Washi Tape Set", "Stationery", 890, 5),
    ("Insulated Water Bottle 750ml", "Outdoor", 2900, 7),
    ("Enamel Camping Mug", "Outdoor", 1490, 5),
    ("Picnic Blanket", "Outdoor", 4900, 2),
    ("Waxed Canvas Backpack", "Outdoor", 12900, 2),
    ("Folding Camp Stool", "Outdoor", 3900, 2),
    ("Rechargeable Headlamp", "Outdoor", 3490, 3),
    ("Travel Coffee Press", "Outdoor", 3200, 3),
    ("Merino Wool Beanie", "Outdoor", 3400, 4),
    ("Leather Card Holder", "Accessories", 3900, 4),
    ("Canvas Tote Bag", "Accessories", 1990, 7),
    ("Wool Scarf", "Accessories", 5900, 3),
    ("Leather Keyring", "Accessories", 1490, 4),
    ("Reusable Coffee Cup", "Accessories", 1890, 6),
    ("Tortoiseshell Sunglasses", "Accessories", 7900, 2),
    ("Silk Scrunchie Set", "Accessories", 1590, 3),
    ("Slim Leather Wallet", "Accessories", 5400, 2),
];

/// Every this many products (the first included) got dearer a year before `today`.
const PRICE_RISE_EVERY: usize = 5;

/// How busy each month is, January first: gifts make November and December peak.
const MONTH_FACTORS: [f64; 12] = [0.85, 0.8, 0.9, 0.9, 0.95, 0.9, 0.85, 0.8, 0.95, 1.0, 1.45, 1.7];

/// How many rows of each table the demo database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DatasetSummary {
    /// Rows of `customers`.
    pub(crate) customers: usize,
    /// Rows of `products`.
    pub(crate) products: usize,
    /// Rows of `orders`.
    pub(crate) orders: usize,
    /// Rows of `order_items`.
    pub(crate) order_items: usize,
}

/// Creates (or replaces) the demo shop database at `path`: customers, products,
/// orders and their items over the two years before `today`.
///
/// The database is written to a temporary file next to `path` and renamed into
/// place, so a crash never leaves a half-made database behind.
pub(crate) fn create(path: &Path, today: NaiveDate) -> anyhow::Result<DatasetSummary> {
    let shop = Shop::generate(today)?;
    let temp = temp_path(path)?;
    remove_if_exists(&temp)?;
    let written = write(&temp, &shop).and_then(|()| {
        // Journaling was off while writing: make the file durable before it goes live.
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", temp.display()))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e.context(format!("writing the demo database {}", path.display())));
    }
    // A journal or WAL left by the previous file would be replayed into the new one.
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        remove_if_exists(Path::new(&sidecar))?;
    }
    std::fs::rename(&temp, path)
        .with_context(|| format!("moving the demo database into {}", path.display()))?;
    Ok(shop.summary())
}

/// The hidden temporary file `create` writes before renaming it to `path`.
fn temp_path(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("demo database path {} has no file name", path.display()))?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(".tmp");
    Ok(path.with_file_name(temp))
}

/// Removes the file at `path`, if there is one.
fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes `shop` into a new database file at `path`, in one transaction.
fn write(path: &Path, shop: &Shop) -> anyhow::Result<()> {
    let mut conn =
        Connection::open(path).with_context(|| format!("creating {}", path.display()))?;
    // Safety comes from the rename, so the file needs no journal while it is made.
    conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO customers (id, first_name, last_name, email, city, country, signup_date)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (c, id) in shop.customers.iter().zip(1_i64..) {
            insert.execute(params![
                id,
                c.first_name,
                c.last_name,
                c.email,
                c.city,
                c.country,
                iso(c.signup)
            ])?;
        }
        let mut insert = tx.prepare(
            "INSERT INTO products (id, name, category, unit_price, in_stock)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (p, id) in shop.products.iter().zip(1_i64..) {
            insert.execute(params![id, p.name, p.category, money(p.price_cents), p.in_stock])?;
        }
        let mut insert_order = tx.prepare(
            "INSERT INTO orders (id, customer_id, order_date, status, total_amount)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut insert_item = tx.prepare(
            "INSERT INTO order_items (id, order_id, product_id, quantity, unit_price)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut item_id = 0_i64;
        for (o, id) in shop.orders.iter().zip(1_i64..) {
            let customer = index_to_id(o.customer);
            let total = money(o.total_cents());
            insert_order.execute(params![id, customer, iso(o.date), o.status, total])?;
            for item in &o.items {
                item_id += 1;
                let product = index_to_id(item.product);
                let price = money(item.unit_price_cents);
                insert_item.execute(params![item_id, id, product, item.quantity, price])?;
            }
        }
    }
    tx.commit()?;
    // Row counts for discovery and the query planner.
    conn.execute_batch("ANALYZE")?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// The 1-based row id of the element at `index` of a list.
fn index_to_id(index: usize) -> i64 {
    i64::try_from(index).map_or(i64::MAX, |i| i + 1)
}

/// `cents` as the amount stored in the database.
fn money(cents: i64) -> f64 {
    // Cents are small: the conversion is exact.
    cents as f64 / 100.0
}

/// `date` as ISO `YYYY-MM-DD` text.
fn iso(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// A customer of the demo shop.
#[derive(Debug)]
struct Customer {
    first_name: &'static str,
    last_name: &'static str,
    email: String,
    city: &'static str,
    country: &'static str,
    signup: NaiveDate,
}

/// A product of the demo shop's catalog.
#[derive(Debug)]
struct Product {
    name: &'static str,
    category: &'static str,
    /// Today's price.
    price_cents: i64,
    /// The price before `price_rise`, if the product got dearer.
    old_price_cents: i64,
    in_stock: i64,
}

impl Product {
    /// The product's price on `date`, given the day prices rose.
    fn price_on(&self, date: NaiveDate, price_rise: NaiveDate) -> i64 {
        if date < price_rise { self.old_price_cents } else { self.price_cents }
    }
}

/// An order and its items.
#[derive(Debug)]
struct Order {
    /// Index into `Shop::customers`.
    customer: usize,
    date: NaiveDate,
    status: &'static str,
    items: Vec<OrderItem>,
}

impl Order {
    /// What the order costs: the sum of its items.
    fn total_cents(&self) -> i64 {
        self.items.iter().map(|i| i.quantity * i.unit_price_cents).sum()
    }
}

/// One line of an order.
#[derive(Debug)]
struct OrderItem {
    /// Index into `Shop::products`.
    product: usize,
    quantity: i64,
    unit_price_cents: i64,
}

/// The whole demo shop in memory, before it is written.
#[derive(Debug)]
struct Shop {
    /// Sorted by signup date, so ids grow with it.
    customers: Vec<Customer>,
    products: Vec<Product>,
    /// Sorted by date, so ids grow with it.
    orders: Vec<Order>,
}

impl Shop {
    /// The shop over the two years before `today`.
    fn generate(today: NaiveDate) -> anyhow::Result<Shop> {
        let start = today
            .checked_sub_months(Months::new(24))
            .with_context(|| format!("no date two years before {today}"))?;
        let price_rise = today
            .checked_sub_months(Months::new(12))
            .with_context(|| format!("no date a year before {today}"))?;
        let mut rng = StdRng::seed_from_u64(SEED);
        let customers = customers(&mut rng, start, today);
        let products = products(&mut rng);
        let orders = orders(&mut rng, &customers, &products, start, today, price_rise);
        Ok(Shop { customers, products, orders })
    }

    /// How many rows each table gets.
    fn summary(&self) -> DatasetSummary {
        DatasetSummary {
            customers: self.customers.len(),
            products: self.products.len(),
            orders: self.orders.len(),
            order_items: self.orders.iter().map(|o| o.items.len()).sum(),
        }
    }
}

/// Customers with distinct names, sorted by signup date: a few at launch, then
/// more and more often.
fn customers(rng: &mut StdRng, start: NaiveDate, today: NaiveDate) -> Vec<Customer> {
    let span = (today - start).num_days();
    let mut signups: Vec<NaiveDate> = (0..CUSTOMERS)
        .map(|i| {
            let day = if i < LAUNCH_CUSTOMERS {
                rng.random_range(0..7)
            } else {
                // Signups grow linearly, twice as frequent today as at the start:
                // the inverse of the distribution function (t + t²/2) / 1.5.
                let u: f64 = rng.random();
                let t = (1.0 + 3.0 * u).sqrt() - 1.0;
                (t * span as f64) as i64
            };
            start + chrono::Days::new(day.clamp(0, span).unsigned_abs())
        })
        .collect();
    signups.sort_unstable();

    let cities = cumulative(&CITIES.iter().map(|c| f64::from(c.2)).collect::<Vec<_>>());
    let mut names = HashSet::new();
    signups
        .into_iter()
        .map(|signup| {
            let (first_name, last_name) = loop {
                let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
                let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
                if names.insert((first, last)) {
                    break (first, last);
                }
            };
            let (city, country, _) = CITIES[pick_weighted(rng, &cities)];
            let domain = EMAIL_DOMAINS[rng.random_range(0..EMAIL_DOMAINS.len())];
            // Distinct names make distinct emails.
            let email = format!("{}.{}@{domain}", email_part(first_name), email_part(last_name));
            Customer { first_name, last_name, email, city, country, signup }
        })
        .collect()
}

/// `name` as it appears in an email address: lowercase letters only.
fn email_part(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase()).collect()
}

/// The catalog, with stock levels and the prices before the price rise.
fn products(rng: &mut StdRng) -> Vec<Product> {
    PRODUCTS
        .iter()
        .enumerate()
        .map(|(i, &(name, category, price_cents, _))| {
            let old_price_cents = if i % PRICE_RISE_EVERY == 0 {
                price_cents - (price_cents / 1000 * 100).max(100)
            } else {
                price_cents
            };
            let in_stock = if rng.random_bool(0.1) { 0 } else { rng.random_range(3..=250) };
            Product { name, category, price_cents, old_price_cents, in_stock }
        })
        .collect()
}

/// Orders day by day from the customers signed up by then: busier as the shop
/// grows, in November and December and early in the week.
fn orders(
    rng: &mut StdRng,
    customers: &[Customer],
    products: &[Product],
    start: NaiveDate,
    today: NaiveDate,
    price_rise: NaiveDate,
) -> Vec<Order> {
    // Some customers never order, most now and then, a few loyal ones much more often.
    let loyalty: Vec<f64> = customers
        .iter()
        .map(|_| {
            let u: f64 = rng.random();
            if rng.random_bool(NEVER_ORDER_SHARE) { 0.0 } else { 0.3 + 3.0 * u.powi(3) }
        })
        .collect();
    // Per day: how busy the shop is, and the running sums of how likely each
    // signed-up customer is to order, keen just after signing up.
    let days: Vec<(NaiveDate, f64, Vec<f64>)> = start
        .iter_days()
        .take_while(|d| *d <= today)
        .map(|date| {
            let signed_up = customers.partition_point(|c| c.signup <= date);
            let activity: Vec<f64> = customers[..signed_up]
                .iter()
                .zip(&loyalty)
                .map(|(c, loyalty)| {
                    let age = (date - c.signup).num_days() as f64;
                    loyalty * (0.35 + 0.65 * (-age / 120.0).exp())
                })
                .collect();
            let activity = cumulative(&activity);
            let weekday = match date.weekday() {
                Weekday::Sun | Weekday::Mon => 1.15,
                Weekday::Fri | Weekday::Sat => 0.85,
                _ => 1.0,
            };
            let season = MONTH_FACTORS[date.month0() as usize];
            let busy = season * weekday * activity.last().copied().unwrap_or(0.0);
            (date, busy, activity)
        })
        .collect();
    let first_orders = (1.0 - NEVER_ORDER_SHARE) * FIRST_ORDER_SHARE * CUSTOMERS as f64;
    let repeat_orders = EXPECTED_ORDERS - first_orders;
    let per_busy = repeat_orders / days.iter().map(|d| d.1).sum::<f64>();
    let popularity = cumulative(&PRODUCTS.iter().map(|p| f64::from(p.3)).collect::<Vec<_>>());

    let mut orders = Vec::new();
    let mut place = |rng: &mut StdRng, customer: usize, date: NaiveDate| {
        let items = basket(rng, products, &popularity, date, price_rise);
        let status = status(rng, (today - date).num_days());
        orders.push(Order { customer, date, status, items });
    };
    let mut next_signup = 0;
    for (date, busy, activity) in &days {
        // Many sign up as they place their first order.
        while customers.get(next_signup).is_some_and(|c| c.signup == *date) {
            if loyalty[next_signup] > 0.0 && rng.random_bool(FIRST_ORDER_SHARE) {
                place(rng, next_signup, *date);
            }
            next_signup += 1;
        }
        if activity.is_empty() {
            continue;
        }
        for _ in 0..poisson(rng, busy * per_busy) {
            let customer = pick_weighted(rng, activity);
            place(rng, customer, *date);
        }
    }
    orders
}

/// The items of one order placed on `date`: one to four distinct products,
/// the popular ones more often, at their price on that day.
fn basket(
    rng: &mut StdRng,
    products: &[Product],
    popularity: &[f64],
    date: NaiveDate,
    price_rise: NaiveDate,
) -> Vec<OrderItem> {
    let lines = match rng.random_range(0..100) {
        0..50 => 1,
        50..78 => 2,
        78..92 => 3,
        _ => 4,
    };
    let mut items: Vec<OrderItem> = Vec::with_capacity(lines);
    while items.len() < lines {
        let product = pick_weighted(rng, popularity);
        if items.iter().any(|i| i.product == product) {
            continue;
        }
        let unit_price_cents = products[product].price_on(date, price_rise);
        let quantity = match rng.random_range(0..100) {
            0..75 => 1,
            75..93 => 2,
            _ => 3,
        };
        items.push(OrderItem { product, quantity, unit_price_cents });
    }
    items
}

/// The status of an order placed `age` days ago.
fn status(rng: &mut StdRng, age: i64) -> &'static str {
    let roll = rng.random_range(0..100);
    match age {
        0..=2 if roll < 4 => "cancelled",
        0..=2 => "processing",
        3..=7 if roll < 15 => "processing",
        3..=7 if roll < 85 => "shipped",
        3..=7 => "delivered",
        _ if roll < 5 => "cancelled",
        _ if roll < 9 => "returned",
        _ => "delivered",
    }
}

/// Running sums of `weights`, for [`pick_weighted`].
fn cumulative(weights: &[f64]) -> Vec<f64> {
    weights
        .iter()
        .scan(0.0, |sum, w| {
            *sum += w;
            Some(*sum)
        })
        .collect()
}

/// An index drawn with probability proportional to its weight, given the
/// running sums of the weights (not empty, last one positive).
fn pick_weighted(rng: &mut StdRng, cumulative: &[f64]) -> usize {
    let r = rng.random::<f64>() * cumulative.last().copied().unwrap_or(0.0);
    cumulative.partition_point(|&c| c <= r).min(cumulative.len().saturating_sub(1))
}

/// A draw from the Poisson distribution with mean `mean` (small), by Knuth's method.
fn poisson(rng: &mut StdRng, mean: f64) -> usize {
    let limit = (-mean).exp();
    let mut count = 0;
    let mut product: f64 = rng.random();
    while product > limit {
        count += 1;
        product *= rng.random::<f64>();
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use custard_core::{DiscoverOptions, Executor as _, SqliteExecutor};

    /// The day the tests' shop is built for.
    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, 15).expect("valid date")
    }

    /// A demo database built for `today` in a fresh temporary directory.
    fn build(today: NaiveDate) -> (tempfile::TempDir, PathBuf, DatasetSummary) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("demo.db");
        let summary = create(&path, today).expect("demo database");
        (dir, path, summary)
    }

    /// One integer from `sql`.
    fn number(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every row of `table` as text, in id order.
    fn dump(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY id")).expect("dump");
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                (0..width)
                    .map(|i| row.get_ref(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|cells| cells.join("|"))
            })
            .expect("dump");
        rows.collect::<Result<_, _>>().expect("dump")
    }

    /// One integer from `sql`, with `today` and the day two years before as `?1` and `?2`.
    fn number_on(conn: &Connection, sql: &str, today: NaiveDate) -> i64 {
        let start = today.checked_sub_months(Months::new(24)).expect("two years before");
        let values = [iso(today), iso(start)];
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let used = &values[..stmt.parameter_count()];
        stmt.query_row(rusqlite::params_from_iter(used), |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Each query counts the rows that break one rule of the demo database.
    const VIOLATIONS: &[&str] = &[
        // Totals are the sum of their items.
        "SELECT count(*) FROM (SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id
           GROUP BY o.id HAVING abs(o.total_amount - sum(i.quantity * i.unit_price)) > 0.001)",
        "SELECT count(*) FROM orders o WHERE NOT EXISTS
           (SELECT 1 FROM order_items i WHERE i.order_id = o.id)",
        "SELECT count(*) FROM (SELECT order_id FROM order_items GROUP BY order_id
           HAVING count(*) > 4 OR count(DISTINCT product_id) <> count(*))",
        // Dates.
        "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id
           WHERE o.order_date < c.signup_date",
        "SELECT count(*) FROM orders WHERE order_date < ?2 OR order_date > ?1",
        "SELECT count(*) FROM customers WHERE signup_date < ?2 OR signup_date > ?1",
        "SELECT count(*) FROM orders WHERE typeof(order_date) <> 'text'
           OR order_date IS NOT date(order_date)",
        "SELECT count(*) FROM customers WHERE typeof(signup_date) <> 'text'
           OR signup_date IS NOT date(signup_date)",
        "SELECT count(*) FROM orders WHERE status = 'processing' AND order_date < date(?1, '-7 days')",
        // Values.
        "SELECT count(*) FROM orders
           WHERE status NOT IN ('processing', 'shipped', 'delivered', 'cancelled', 'returned')",
        "SELECT count(*) FROM orders WHERE typeof(total_amount) <> 'real' OR total_amount <= 0",
        "SELECT count(*) FROM products WHERE round(unit_price, 2) <> unit_price OR unit_price <= 0",
        "SELECT count(*) FROM order_items WHERE round(unit_price, 2) <> unit_price OR unit_price <= 0",
        "SELECT count(*) FROM customers WHERE email NOT LIKE '%_._%@example.___'",
        // Keys and storage.
        "SELECT count(*) FROM pragma_foreign_key_check",
        "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check <> 'ok'",
    ];

    /// Builds the shop for `today` and checks its sizes and every rule.
    fn check_invariants(today: NaiveDate) {
        let (_dir, path, summary) = build(today);
        let conn = Connection::open(&path).expect("open");
        let counted = DatasetSummary {
            customers: number(&conn, "SELECT count(*) FROM customers") as usize,
            products: number(&conn, "SELECT count(*) FROM products") as usize,
            orders: number(&conn, "SELECT count(*) FROM orders") as usize,
            order_items: number(&conn, "SELECT count(*) FROM order_items") as usize,
        };
        assert_eq!(counted, summary);
        assert!((200..=300).contains(&summary.customers), "{summary:?}");
        assert!((40..=60).contains(&summary.products), "{summary:?}");
        assert!((3_000..=5_000).contains(&summary.orders), "{summary:?}");
        assert!(
            (summary.orders..=4 * summary.orders).contains(&summary.order_items),
            "{summary:?}"
        );
        for sql in VIOLATIONS {
            assert_eq!(number_on(&conn, sql, today), 0, "{today}: {sql}");
        }
    }

    #[test]
    fn invariants_hold_on_any_day() {
        check_invariants(today());
        check_invariants(NaiveDate::from_ymd_opt(2024, 2, 29).expect("leap day"));
        check_invariants(NaiveDate::from_ymd_opt(2027, 1, 1).expect("new year"));
    }

    #[test]
    fn looks_like_a_shop() {
        let (_dir, path, _) = build(today());
        let conn = Connection::open(&path).expect("open");
        // A handful of each, growth, a busy season, prices that changed, quiet customers.
        let checks = [
            ("SELECT count(DISTINCT country) FROM customers", 6..=12),
            ("SELECT count(DISTINCT city) FROM customers", 12..=15),
            ("SELECT count(DISTINCT category) FROM products", 6..=6),
            ("SELECT count(DISTINCT status) FROM orders", 5..=5),
            ("SELECT count(*) FROM products WHERE in_stock = 0", 1..=10),
            ("SELECT count(*) FROM customers WHERE signup_date < '2024-06-15'", 60..=130),
            ("SELECT count(*) FROM orders WHERE order_date < '2024-06-15'", 900..=1_800),
            (
                "SELECT count(*) FROM customers c
                 WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)",
                10..=60,
            ),
            (
                "SELECT max(n) FROM (SELECT count(*) AS n FROM orders GROUP BY customer_id)",
                30..=120,
            ),
            // November and December of 2024 against September and October.
            (
                "SELECT sum(order_date >= '2024-11-01' AND order_date < '2025-01-01')
                 - sum(order_date >= '2024-09-01' AND order_date < '2024-11-01') FROM orders",
                100..=500,
            ),
            (
                "SELECT count(*) FROM (SELECT product_id FROM order_items
                 GROUP BY product_id HAVING count(DISTINCT unit_price) > 1)",
                10..=10,
            ),
            (
                "SELECT count(*) FROM order_items i
                 JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id
                 WHERE o.order_date >= '2024-06-15' AND i.unit_price <> p.unit_price",
                0..=0,
            ),
        ];
        for (sql, range) in checks {
            let n = number(&conn, sql);
            assert!(range.contains(&n), "{sql}: {n}");
        }
    }

    #[test]
    fn same_day_same_shop() {
        let (_a, first, one) = build(today());
        let (_b, second, two) = build(today());
        let (_c, later, three) = build(today() + chrono::Days::new(1));
        assert_eq!(one, two);
        let (first, second, later) = (
            Connection::open(first).expect("open"),
            Connection::open(second).expect("open"),
            Connection::open(later).expect("open"),
        );
        for table in ["customers", "products", "orders", "order_items"] {
            assert_eq!(dump(&first, table), dump(&second, table), "{table}");
        }
        assert_ne!(dump(&first, "orders"), dump(&later, "orders"));
        assert!(three.orders > 0);
    }

    #[test]
    fn replaces_an_existing_file_atomically() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("demo.db");
        std::fs::write(&path, "not a database").expect("write");
        std::fs::write(dir.path().join("demo.db-journal"), "stale").expect("write");
        let summary = create(&path, today()).expect("replaced");
        let conn = Connection::open(&path).expect("open");
        assert_eq!(number(&conn, "SELECT count(*) FROM orders") as usize, summary.orders);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["demo.db"]);
    }

    #[test]
    fn fails_cleanly_without_a_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing").join("demo.db");
        assert!(create(&path, today()).is_err());
        assert!(create(Path::new("/"), today()).is_err());
    }

    #[test]
    fn fast_enough() {
        let dir = tempfile::tempdir().expect("temp dir");
        let started = std::time::Instant::now();
        create(&dir.path().join("demo.db"), today()).expect("demo database");
        // Generous for slow CI machines; it takes a fraction of this in a debug build.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn discovery_finds_the_tables_and_their_keys() {
        let (_dir, path, _) = build(today());
        let exec = SqliteExecutor::open(&path).expect("open");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let schema = runtime.block_on(exec.discover(&DiscoverOptions::default())).expect("schema");
        let found: Vec<String> = schema
            .tables
            .iter()
            .map(|t| {
                let mut keys: Vec<String> = t
                    .foreign_keys
                    .iter()
                    .map(|fk| {
                        format!(
                            " {}->{}({})",
                            fk.columns.join(","),
                            fk.referenced_table,
                            fk.referenced_columns.join(",")
                        )
                    })
                    .collect();
                // SQLite lists a table's keys last declared first.
                keys.sort();
                format!("{} pk=({}){}", t.name, t.primary_key.join(","), keys.concat())
            })
            .collect();
        assert_eq!(
            found,
            [
                "customers pk=(id)",
                "order_items pk=(id) order_id->orders(id) product_id->products(id)",
                "orders pk=(id) customer_id->customers(id)",
                "products pk=(id)",
            ]
        );
    }
}

//! Replicas with real processes: three `custard-server` replicas on one
//! PostgreSQL store behind nginx, routing questions over NATS to whichever
//! replica holds a connection's agent, with real `custard-agent`s that connect
//! through nginx and a fake OpenAI-compatible model.
//!
//! One test walks through what a deployment lives through: sign-up and
//! questions spread over every replica, the replica holding an agent
//! SIGKILLed under questions in flight (each ends with a clear code, never a
//! hang; the agent comes back through nginx; no answered question is lost from
//! the history), a key rotated through a replica that does not hold the agent
//! (the agent is disconnected wherever it is), and a sign-in flood spread over
//! the replicas (the per-account limit holds across them). Each measurement
//! prints one `replicas-table |` line; run with `-- --nocapture` to see them.
//!
//! Needs PostgreSQL (scripts/ensure-postgres.sh), NATS (scripts/ensure-nats.sh;
//! `CUSTARD_TEST_NATS_URL` names another) and nginx (scripts/ensure-nginx.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custard_testkit::api::Api;
use custard_testkit::bins::workspace_binary;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::processes::{Process, Scene, free_port, start_agent, start_named_server};
use custard_testkit::tokio_postgres;
use custard_testkit::{ReadableDb, ScratchDb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const EMAIL: &str = "ada@example.com";
/// The most the test may take, start-ups included (building the agent is not).
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// How long a process may take to start, or a status to change.
const WAIT: Duration = Duration::from_secs(20);
/// Replicas behind nginx (with routing; see [`replica_count`]).
const REPLICAS: usize = 3;
/// The replicas' query timeout.
const QUERY_TIMEOUT_SECS: u64 = 10;
/// How long reading the `slow_answer` view takes.
const SLOW_SECS: u64 = 5;
/// Questions asked through nginx in step 3, by [`CLIENTS`] clients at once.
const QUESTIONS: usize = 300;
const CLIENTS: usize = 8;
/// Slow questions in flight when the agent's replica is killed: the agent's
/// default concurrency, so none is answered `agent_busy`.
const SLOW_IN_FLIGHT: usize = 4;
/// Questions asked on connection A once its agent is back.
const QUESTIONS_AFTER_KILL: usize = 10;
/// How soon a rotated key's agent must be offline everywhere.
const ROTATION_BOUND: Duration = Duration::from_secs(5);
/// The metrics token the replicas are started with.
const METRICS_TOKEN: &str = "replicas-test-metrics-token";
/// Wrong-password sign-ins of the flood (fewer when fewer replicas are alive:
/// see [`FLOOD_PER_REPLICA`]).
const FLOOD: usize = 30;
/// The server's sign-in limits (`rate_limit::Limits::default`): attempts per
/// account (shared by the replicas through the store) and per client address
/// (counted by each replica).
const PER_ACCOUNT: usize = 5;
const PER_IP: usize = 20;
/// Sign-ins one replica gets in the flood: below its per-address limit, so
/// only the per-account limit can refuse (the test's own sign-ins come from
/// 127.0.0.1 too: one in step 1, the correct one after the flood, one spare).
const FLOOD_PER_REPLICA: usize = PER_IP - 3;
/// Wrong passwords evaluated beyond the per-account burst that are still fine:
/// one attempt comes back every 12 s.
const FLOOD_SLACK: usize = 1;

/// Questions carry a marker that tells the fake model which SQL to write.
const FAST: &str = "Q-FAST how many items are there?";
const SLOW: &str = "Q-SLOW what is the slow answer?";
const FAST_SQL: &str = "SELECT count(*) AS items FROM items";
const SLOW_SQL: &str = "SELECT answer FROM slow_answer";

/// The two connections' shops differ in their item count, so every answer
/// shows which agent gave it.
const ITEMS: [i64; 2] = [5, 7];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_nginx() {
    let agent_bin = agent_binary().await;
    let nats = nats_url();
    assert_nats_answers(&nats).await;
    let nginx_bin = nginx_binary();
    let scene = Scene::new("replicas");
    let started = Instant::now();
    let run = async {
        let store = ScratchDb::create("replicas_store").await;
        let shops = [
            Shop::create("replicas_shop_a", ITEMS[0]).await,
            Shop::create("replicas_shop_b", ITEMS[1]).await,
        ];
        let mut cluster = Cluster::start(&scene, &nginx_bin, &store.url, &nats).await;
        let (api, connections, agents) =
            step1_2_sign_up_and_connect(&cluster, &agent_bin, &shops).await;
        let mut answered = step3_questions_everywhere(&cluster, &api, &connections).await;
        step4_kill_the_agents_replica(
            &mut cluster,
            &api,
            &connections,
            &agents,
            &shops,
            &mut answered,
        )
        .await;
        step5_rotate_through_another_replica(&cluster, &api, &connections, &agents).await;
        step6_sign_in_flood(&cluster).await;
        drop(agents);
    };
    if tokio::time::timeout(TEST_LIMIT, run).await.is_err() {
        panic!("{} did not finish within {TEST_LIMIT:?}", scene.name());
    }
    eprintln!("{}: {:.1} s", scene.name(), started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Steps

/// One of the two connections.
#[derive(Clone, Debug)]
struct Connection {
    /// `A` or `B`.
    label: &'static str,
    id: String,
    key: String,
    /// The agent's URL from the setup lines: nginx's.
    agent_url: String,
    /// The rows a fast question is answered with.
    items: i64,
}

/// Steps 1 and 2: sign up, verify and sign in through nginx; then two
/// connections with an agent each, connected through nginx.
async fn step1_2_sign_up_and_connect(
    cluster: &Cluster<'_>,
    agent_bin: &Path,
    shops: &[Shop; 2],
) -> (Api, [Connection; 2], Vec<Process>) {
    let began = Instant::now();
    let signup = json!({
        "email": EMAIL, "password": PASSWORD, "first_name": "Ada",
        "last_name": "Lovelace", "organization_name": "Analytical Engines",
    });
    let (status, reply) = cluster.anonymous().post("/api/v1/auth/signup", &signup).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (link, sender) = cluster.outbox_link(EMAIL, "/verify-email?token=").await;
    assert!(
        link.starts_with(&cluster.nginx.base()),
        "the link points at the balancer ({}): {link}",
        cluster.nginx.base()
    );
    let path = link[cluster.nginx.base().len()..].replacen(
        "/verify-email?",
        "/api/v1/auth/verify-email?",
        1,
    );
    let (status, reply) = cluster.anonymous().get(&path).await;
    assert_eq!(status, StatusCode::OK, "verifying through nginx: {reply}");
    let api = cluster.login(EMAIL, PASSWORD).await;
    report(
        "1 sign-up, verify, sign-in via nginx",
        &format!("verification email written by {}", cluster.replicas[sender].name),
        began.elapsed(),
    );

    let began = Instant::now();
    let mut created = Vec::new();
    for (i, label) in ["A", "B"].into_iter().enumerate() {
        let (status, reply) = api
            .post(
                "/api/v1/connections",
                &json!({"name": format!("Shop {label}"), "db_type": "postgresql"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let agent_url = reply["setup"]["server_url"].as_str().expect("server_url").to_owned();
        let want = format!("ws://{}/", cluster.nginx.address);
        assert!(agent_url.starts_with(&want), "agents connect through nginx: {agent_url}");
        created.push(Connection {
            label,
            id: reply["id"].as_str().expect("id").to_owned(),
            key: reply["api_key"].as_str().expect("api_key").to_owned(),
            agent_url,
            items: ITEMS[i],
        });
    }
    let connections: [Connection; 2] = created.try_into().expect("two connections");
    let agents: Vec<Process> = connections
        .iter()
        .zip(shops)
        .map(|(c, shop)| {
            let name = format!("agent-{}", c.label);
            start_agent(
                cluster.scene,
                agent_bin,
                &name,
                &c.agent_url,
                &c.key,
                &shop.reader_url(),
                &[],
            )
        })
        .collect();
    for c in &connections {
        wait_until(&api, c, "online with a schema", online_with_schema).await;
    }
    let holders = [
        cluster.wait_for_holder(&connections[0]).await,
        cluster.wait_for_holder(&connections[1]).await,
    ];
    let gauges = cluster.agents_online_gauges().await;
    let total: i64 = gauges.iter().flatten().sum();
    assert_eq!(total, 2, "two agents online over the replicas' /metrics: {gauges:?}");
    for (c, &h) in connections.iter().zip(&holders) {
        assert!(
            gauges[h].unwrap_or(0) >= 1,
            "{} holds {}'s agent by its log, yet its gauge says {gauges:?}",
            cluster.replicas[h].name,
            c.label
        );
    }
    let gauge_text: Vec<String> = cluster
        .replicas
        .iter()
        .zip(&gauges)
        .map(|(r, g)| format!("{}={}", r.name, g.map_or("-".to_owned(), |g| g.to_string())))
        .collect();
    report(
        "2 two connections, agents via nginx",
        &format!(
            "both online with a schema; A's agent on {}, B's on {}; custard_agents_online {}",
            cluster.replicas[holders[0]].name,
            cluster.replicas[holders[1]].name,
            gauge_text.join(" ")
        ),
        began.elapsed(),
    );
    (api, connections, agents)
}

/// Step 3: [`QUESTIONS`] questions through nginx, answered with the right rows by
/// whichever replica received them. Returns the answered ids by connection.
async fn step3_questions_everywhere(
    cluster: &Cluster<'_>,
    api: &Api,
    connections: &[Connection; 2],
) -> [Vec<String>; 2] {
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (api, connections, next) = (api.clone(), connections.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut asked = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= QUESTIONS {
                        return asked;
                    }
                    let which = n % 2;
                    let result = ask(&api, &connections[which].id, FAST).await;
                    asked.push((which, result));
                }
            })
        })
        .collect();
    let mut answered: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut by_upstream: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for client in clients {
        for (which, result) in client.await.expect("a client task") {
            let asked = result.unwrap_or_else(|e| panic!("a question through nginx failed: {e}"));
            let want = connections[which].items;
            assert_eq!(
                (asked.status, &asked.body["rows"]),
                (StatusCode::OK, &json!([[want]])),
                "a question on {} through nginx (received by {:?}): {}",
                connections[which].label,
                asked.upstream,
                asked.body
            );
            answered[which].push(asked.body["id"].as_str().expect("an answer's id").to_owned());
            *by_upstream.entry(cluster.replica_name(asked.upstream.as_deref())).or_default() += 1;
            slowest = slowest.max(asked.elapsed);
        }
    }
    for r in &cluster.replicas {
        assert!(
            by_upstream.get(&r.name).is_some_and(|n| *n > 0),
            "every replica received questions from nginx: {by_upstream:?}"
        );
    }
    let took = began.elapsed();
    report(
        "3 questions via nginx",
        &format!(
            "{QUESTIONS} questions from {CLIENTS} clients, alternating A and B: all 200 with the \
             right rows (A {} items, B {} items); received by {by_upstream:?}; slowest {}; {:.0} \
             questions/s",
            connections[0].items,
            connections[1].items,
            secs(slowest),
            QUESTIONS as f64 / took.as_secs_f64()
        ),
        took,
    );
    answered
}

/// Step 4: SIGKILL the replica holding A's agent under slow questions on A: each
/// ends with a clear code by its deadline; the agent comes back through
/// nginx; A answers again; the history keeps every answered question.
async fn step4_kill_the_agents_replica(
    cluster: &mut Cluster<'_>,
    api: &Api,
    connections: &[Connection; 2],
    agents: &[Process],
    shops: &[Shop; 2],
    answered: &mut [Vec<String>; 2],
) {
    let a = &connections[0];
    assert!(cluster.replicas.len() >= 2, "killing a replica needs another to take over");
    {
        let holder = cluster.wait_for_holder(a).await;
        let killed = cluster.replicas[holder].name.clone();
        let killed_address = cluster.replicas[holder].address.clone();
        let sessions_before = agents[0].log_text().matches("connected to the server").count();
        let asking: Vec<_> = (0..SLOW_IN_FLIGHT)
            .map(|_| {
                let (api, id) = (api.clone(), a.id.clone());
                tokio::spawn(async move { ask(&api, &id, SLOW).await })
            })
            .collect();
        shops[0].wait_for_busy("slow_answer", SLOW_IN_FLIGHT).await;
        let killed_at = Instant::now();
        cluster.kill(holder).await;
        let cluster = &*cluster;
        // Classes of an error answer that are fine while A's agent moves.
        let classify = |asked: &Asked, allowed: &[&str]| -> Option<String> {
            let received_by = cluster.replica_name(asked.upstream.as_deref());
            let by_killed = asked.upstream.as_deref() == Some(killed_address.as_str());
            let code = error_code(&asked.body);
            match asked.status {
                StatusCode::BAD_GATEWAY if by_killed => {
                    Some(format!("502 from nginx (received by the killed {received_by})"))
                }
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                    if !by_killed && allowed.contains(&code) =>
                {
                    Some(format!("{} {code} from {received_by}", asked.status.as_u16()))
                }
                _ => None,
            }
        };

        // From the kill on, at once: the questions in flight end; the agent
        // connects again; a prober asks A until it is answered.
        let patience = patience();
        let in_flight = async {
            let mut classes: BTreeMap<String, usize> = BTreeMap::new();
            let mut slowest = Duration::ZERO;
            for task in asking {
                let asked = task.await.expect("a slow question's task").unwrap_or_else(|e| {
                    panic!("a slow question through nginx got no response: {e}")
                });
                let class = classify(&asked, &["agent_disconnected", "agent_offline"])
                    .unwrap_or_else(|| {
                        panic!(
                            "a question in flight on A when {killed} (holding A's agent) was \
                             killed ended with {} (received by {}): {}",
                            asked.status,
                            cluster.replica_name(asked.upstream.as_deref()),
                            asked.body
                        )
                    });
                assert!(
                    asked.elapsed < patience,
                    "a question in flight at the kill must end before its deadline \
                     ({patience:?}): took {:?} ({class})",
                    asked.elapsed
                );
                slowest = slowest.max(asked.elapsed);
                *classes.entry(class).or_default() += 1;
            }
            (classes, slowest, killed_at.elapsed())
        };
        let agent_log = || agents[0].log_text();
        let reconnect = wait_for(
            "A's agent to connect again",
            || agent_log().matches("connected to the server").count() > sessions_before,
            &agent_log,
        );
        let probe = async {
            let mut classes: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let asked = ask(api, &a.id, FAST).await.expect("asking A through nginx");
                if asked.status == StatusCode::OK {
                    assert_eq!(asked.body["rows"], json!([[a.items]]), "{}", asked.body);
                    let id = asked.body["id"].as_str().expect("id").to_owned();
                    return (killed_at.elapsed(), classes, id);
                }
                let class =
                    classify(&asked, &["agent_offline", "agent_disconnected", "agent_busy"])
                        .unwrap_or_else(|| {
                            panic!(
                                "a question on A while its agent moved: {} {}",
                                asked.status, asked.body
                            )
                        });
                *classes.entry(class).or_default() += 1;
                assert!(
                    killed_at.elapsed() < WAIT,
                    "A was not answered again within {WAIT:?} of the kill: {classes:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let ((classes, slowest, ended), reconnected, (answering, probes, probe_id)) =
            tokio::join!(in_flight, reconnect, probe);
        answered[0].push(probe_id);
        let new_holder = cluster.wait_for_holder(a).await;
        wait_until(api, a, "online again", |c| c["status"] == "online").await;
        report(
            "4 SIGKILL A's replica under questions",
            &format!(
                "killed {killed} with {SLOW_IN_FLIGHT} slow questions on A in flight: \
                 {classes:?}; all ended {} after the kill (slowest question {}, deadline {})",
                secs(ended),
                secs(slowest),
                secs(patience)
            ),
            ended,
        );
        report(
            "4 A's agent back via nginx",
            &format!(
                "agent reconnected (through nginx) to {} {} after the kill; a prober asking A \
                 every 50 ms got {probes:?}, then its first answer {} after the kill",
                cluster.replicas[new_holder].name,
                secs(reconnected),
                secs(answering)
            ),
            answering,
        );
    }

    let began = Instant::now();
    for _ in 0..QUESTIONS_AFTER_KILL {
        let asked = ask(api, &a.id, FAST).await.expect("asking A through nginx");
        assert_eq!(
            (asked.status, &asked.body["rows"]),
            (StatusCode::OK, &json!([[a.items]])),
            "{}",
            asked.body
        );
        answered[0].push(asked.body["id"].as_str().expect("id").to_owned());
    }
    let mut kept = Vec::new();
    for (c, ids) in connections.iter().zip(answered.iter()) {
        let history = history(api, &c.id).await;
        let missing: Vec<&String> = ids.iter().filter(|id| !history.contains_key(*id)).collect();
        assert!(
            missing.is_empty(),
            "{} answered questions of {} are missing from its history (of {}): {missing:?}",
            missing.len(),
            c.label,
            history.len()
        );
        let not_ok: Vec<(&String, &String)> = ids
            .iter()
            .filter_map(|id| Some((id, history.get(id)?)))
            .filter(|(_, o)| *o != "ok")
            .collect();
        assert!(not_ok.is_empty(), "answered questions of {} kept as not ok: {not_ok:?}", c.label);
        let mut others: BTreeMap<&str, usize> = BTreeMap::new();
        let answered_ids: BTreeSet<&String> = ids.iter().collect();
        for (id, outcome) in &history {
            if !answered_ids.contains(id) {
                *others.entry(outcome.as_str()).or_default() += 1;
            }
        }
        kept.push(format!(
            "{}: all {} answered ids kept as ok, {} entries in all, the others {others:?}",
            c.label,
            ids.len(),
            history.len()
        ));
    }
    report(
        "4 history after the kill",
        &format!(
            "{QUESTIONS_AFTER_KILL} more questions on A answered; history (via nginx) keeps every \
             answered question: {}",
            kept.join("; ")
        ),
        began.elapsed(),
    );
}

/// Step 5: rotate B's key through a replica that does not hold B's agent: the
/// agent is disconnected wherever it is.
async fn step5_rotate_through_another_replica(
    cluster: &Cluster<'_>,
    api: &Api,
    connections: &[Connection; 2],
    agents: &[Process],
) {
    let b = &connections[1];
    // One agent: no session a killed replica announced is still counted.
    wait_until(api, b, "online with one agent", |c| c["status"] == "online" && c["agents"] == 1)
        .await;
    let holder = cluster.wait_for_holder(b).await;
    let through = cluster.live().find(|&i| i != holder).expect("a live replica not holding B");
    let direct = cluster.direct(through, api.token.clone());
    let log_before = agents[1].log_text().len();
    let rotated_at = Instant::now();
    let (status, reply) =
        direct.call(Method::POST, &format!("/api/v1/connections/{}/rotate-key", b.id), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "rotating B's key on {}: {reply}",
        cluster.replicas[through].name
    );
    assert_ne!(reply["api_key"].as_str(), Some(b.key.as_str()), "a new key: {reply}");
    wait_until(api, b, "offline after the rotation", |c| c["status"] == "offline").await;
    let offline = rotated_at.elapsed();
    assert!(
        offline < ROTATION_BOUND,
        "B's agent must be disconnected within {ROTATION_BOUND:?} of the rotation: took {offline:?}"
    );
    let (status, reply) =
        ask(api, &b.id, FAST).await.map(|a| (a.status, a.body)).expect("asking B");
    assert_eq!(
        (status, error_code(&reply)),
        (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
        "a question on B after its key was rotated: {reply}"
    );
    // The agent hears why (the close reason), tries again through nginx and
    // is refused wherever it lands.
    let since_rotation = || agents[1].log_text().get(log_before..).unwrap_or_default().to_owned();
    let mut told = Vec::new();
    for needle in ["the API key was rotated", "refused this agent's API key"] {
        wait_for(
            &format!("B's agent to log {needle:?}"),
            || since_rotation().contains(needle),
            &since_rotation,
        )
        .await;
        told.push(rotated_at.elapsed());
    }
    let via = format!(
        "{} directly (B's agent was on {})",
        cluster.replicas[through].name, cluster.replicas[holder].name
    );
    report(
        "5 rotate B's key on another replica",
        &format!(
            "rotated through {via}: B offline via nginx {} after the rotation, questions on B \
             then agent_offline; the agent logged the close reason \"the API key was rotated\" \
             {} after, and its retry through nginx was refused (401) {} after",
            secs(offline),
            secs(told[0]),
            secs(told[1])
        ),
        offline,
    );
}

/// Step 6: wrong passwords for one account spread over the live replicas: the
/// per-account limit holds across them, and then refuses the right password too.
async fn step6_sign_in_flood(cluster: &Cluster<'_>) {
    let began = Instant::now();
    let live: Vec<usize> = cluster.live().collect();
    let flood = FLOOD.min(live.len() * FLOOD_PER_REPLICA);
    let mut outcomes: Vec<(usize, StatusCode, String)> = Vec::new();
    for n in 0..flood {
        let replica = live[n % live.len()];
        let (status, reply) = cluster
            .direct(replica, None)
            .post("/api/v1/auth/login", &json!({"email": EMAIL, "password": "wrong horse"}))
            .await;
        outcomes.push((replica, status, error_code(&reply).to_owned()));
    }
    let wrong: Vec<&(usize, StatusCode, String)> =
        outcomes.iter().filter(|(_, s, _)| *s == StatusCode::UNAUTHORIZED).collect();
    let throttled = outcomes
        .iter()
        .filter(|(_, s, c)| *s == StatusCode::TOO_MANY_REQUESTS && c == "rate_limited")
        .count();
    let summary: Vec<String> = outcomes
        .iter()
        .map(|(r, s, _)| format!("{}:{}", cluster.replicas[*r].name, s.as_u16()))
        .collect();
    assert_eq!(
        wrong.len() + throttled,
        flood,
        "every wrong password is refused 401 or 429 rate_limited: {outcomes:?}"
    );
    assert!(
        (1..=PER_ACCOUNT + FLOOD_SLACK).contains(&wrong.len()),
        "at most {PER_ACCOUNT} (+{FLOOD_SLACK}) wrong passwords are evaluated for one account over \
         every replica, the rest throttled: {summary:?}"
    );
    let first_throttled = outcomes
        .iter()
        .position(|(_, s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("some attempts throttled");
    let evaluated_later = outcomes[first_throttled..]
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        evaluated_later <= FLOOD_SLACK,
        "once throttled, the account stays throttled on every replica: {summary:?}"
    );
    let evaluated_on: BTreeSet<&str> =
        wrong.iter().map(|(r, _, _)| cluster.replicas[*r].name.as_str()).collect();

    // The right password, on the replica that saw the fewest attempts.
    let replica = live[flood % live.len()];
    let response = cluster
        .direct(replica, None)
        .request(Method::POST, "/api/v1/auth/login")
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .expect("signing in with the right password");
    let status = response.status();
    let retry_after =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let reply: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (status, error_code(&reply)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "the right password is refused too while the account is throttled: {reply}"
    );
    assert!(retry_after.is_some(), "a throttled sign-in says when to come back");
    report(
        "6 sign-in flood over the replicas",
        &format!(
            "{flood} wrong passwords round-robin over {} replicas directly: {} evaluated (401, on \
             {evaluated_on:?}), {throttled} throttled (429 rate_limited) from attempt {}; then the \
             right password on {}: 429 rate_limited, Retry-After {} s",
            live.len(),
            wrong.len(),
            first_throttled + 1,
            cluster.replicas[replica].name,
            retry_after.unwrap_or_default()
        ),
        began.elapsed(),
    );
}

// ---------------------------------------------------------------------------
// The cluster

/// One `custard-server` replica.
struct Replica {
    name: String,
    address: String,
    data_dir: PathBuf,
    process: Process,
    alive: bool,
}

/// The replicas, nginx in front of them and the fake model.
struct Cluster<'s> {
    scene: &'s Scene,
    _model: FakeOpenAi,
    replicas: Vec<Replica>,
    nginx: Nginx,
    http: reqwest::Client,
}

impl<'s> Cluster<'s> {
    async fn start(scene: &'s Scene, nginx_bin: &Path, store_url: &str, nats: &str) -> Cluster<'s> {
        let began = Instant::now();
        let model = fake_model().await;
        let count = REPLICAS;
        let addresses: Vec<String> =
            (0..count).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let nginx_port = free_port();
        let public_url = format!("http://127.0.0.1:{nginx_port}");
        let base_url = model.base_url();
        let timeout = QUERY_TIMEOUT_SECS.to_string();
        let prefix = format!("custard-replicas-test-{}", std::process::id());
        let binary = Path::new(env!("CARGO_BIN_EXE_custard-server"));
        // Started together: replicas racing to set up one store is part of the test.
        let starting = addresses.iter().enumerate().map(|(i, address)| {
            let name = format!("r{}", i + 1);
            let data_dir = scene.path().join(format!("{name}-data"));
            let (public_url, base_url, timeout, prefix) =
                (&public_url, &base_url, &timeout, &prefix);
            async move {
                let mut args = vec![
                    "--store-url",
                    store_url,
                    "--replica-name",
                    &name,
                    "--public-url",
                    public_url,
                    "--metrics-token",
                    METRICS_TOKEN,
                    "--llm-model",
                    "test-model",
                    "--llm-base-url",
                    base_url,
                    "--llm-api-key",
                    "test-key",
                    // Clients here ask in tight loops on purpose.
                    "--questions-per-minute",
                    "0",
                    "--query-timeout-secs",
                    timeout,
                ];
                // Subjects of their own, so other tests' replicas on the
                // same NATS never mix with these.
                args.extend(["--nats-url", nats, "--nats-subject-prefix", prefix.as_str()]);
                let process =
                    start_named_server(scene, &name, binary, address, &data_dir, &args, WAIT).await;
                Replica { name, address: address.clone(), data_dir, process, alive: true }
            }
        });
        let replicas = futures_util::future::join_all(starting).await;
        let nginx = Nginx::start(scene, nginx_bin, nginx_port, &addresses).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(45))
            .build()
            .expect("an HTTP client");
        report(
            "0 setup",
            &format!(
                "{count} replicas ready on one PostgreSQL store, routing over NATS {nats}, \
                 nginx {} in front at {}",
                nginx.version, nginx.address
            ),
            began.elapsed(),
        );
        Cluster { scene, _model: model, replicas, nginx, http }
    }

    /// A client of nginx without a token.
    fn anonymous(&self) -> Api {
        Api { http: self.http.clone(), base: self.nginx.base(), token: None }
    }

    /// A client of replica `i` itself, bypassing nginx.
    fn direct(&self, i: usize, token: Option<String>) -> Api {
        Api { http: self.http.clone(), base: format!("http://{}", self.replicas[i].address), token }
    }

    async fn login(&self, email: &str, password: &str) -> Api {
        let (status, reply) = self
            .anonymous()
            .post("/api/v1/auth/login", &json!({"email": email, "password": password}))
            .await;
        assert_eq!(status, StatusCode::OK, "signing in through nginx: {reply}");
        let token = reply["access_token"].as_str().expect("access_token").to_owned();
        Api { token: Some(token), ..self.anonymous() }
    }

    /// Indexes of the replicas still running.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.replicas.iter().enumerate().filter(|(_, r)| r.alive).map(|(i, _)| i)
    }

    /// SIGKILLs replica `i`.
    async fn kill(&mut self, i: usize) {
        self.replicas[i].process.kill().await;
        self.replicas[i].alive = false;
    }

    /// The replica's name for an upstream address nginx reported.
    fn replica_name(&self, upstream: Option<&str>) -> String {
        let Some(upstream) = upstream else { return "<no upstream header>".to_owned() };
        self.replicas
            .iter()
            .find(|r| r.address == upstream)
            .map_or_else(|| format!("<{upstream}>"), |r| r.name.clone())
    }

    /// The first link containing `needle` in an email to `email`, in any
    /// replica's outbox, and the index of the replica that wrote it.
    async fn outbox_link(&self, email: &str, needle: &str) -> (String, usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            for (i, replica) in self.replicas.iter().enumerate() {
                let outbox = replica.data_dir.join("outbox");
                for entry in std::fs::read_dir(&outbox).into_iter().flatten().flatten() {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    if !text.contains(email) {
                        continue;
                    }
                    if let Some(link) = text
                        .split_whitespace()
                        .find(|w| w.starts_with("http") && w.contains(needle))
                    {
                        return (link.to_owned(), i);
                    }
                }
            }
            assert!(Instant::now() < deadline, "no email to {email} in any replica's outbox");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The live replica holding the connection's agent session, by the
    /// `agent connected` / `agent disconnected` lines of the replicas' logs.
    fn holder(&self, connection: &Connection) -> Option<usize> {
        self.live().find(|&i| {
            let log = self.replicas[i].process.log_text();
            let mentions = |what: &str| {
                log.lines().filter(|l| l.contains(what) && l.contains(&connection.id)).count()
            };
            mentions("agent connected") > mentions("agent disconnected")
        })
    }

    async fn wait_for_holder(&self, connection: &Connection) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.holder(connection) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no live replica logged {}'s agent as connected within {WAIT:?}",
                connection.label
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Each replica's `custard_agents_online` from its own `/metrics` (None
    /// for a dead one).
    async fn agents_online_gauges(&self) -> Vec<Option<i64>> {
        let mut gauges = Vec::new();
        for (i, replica) in self.replicas.iter().enumerate() {
            if !replica.alive {
                gauges.push(None);
                continue;
            }
            let response = self
                .direct(i, Some(METRICS_TOKEN.to_owned()))
                .request(Method::GET, "/metrics")
                .send()
                .await
                .expect("GET /metrics");
            assert_eq!(response.status(), StatusCode::OK, "/metrics of {}", replica.name);
            let text = response.text().await.expect("the metrics");
            let label = format!("custard_replica=\"{}\"", replica.name);
            let value = text
                .lines()
                .find(|l| l.starts_with("custard_agents_online{") && l.contains(&label))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "no custard_agents_online with {label} in {}'s /metrics:\n{text}",
                        replica.name
                    )
                });
            gauges.push(Some(value));
        }
        gauges
    }
}

/// nginx in front of the replicas, in one process (`master_process off`), so
/// the SIGKILL of the drop leaves no worker behind serving the port.
struct Nginx {
    _process: Process,
    address: String,
    version: String,
}

impl Nginx {
    async fn start(scene: &Scene, binary: &Path, port: u16, upstreams: &[String]) -> Nginx {
        let dir = scene.path();
        let temp = dir.join("nginx-temp");
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(temp.join(sub)).expect("nginx's temp folders");
        }
        let servers: String = upstreams
            .iter()
            .map(|a| format!("        server {a} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let address = format!("127.0.0.1:{port}");
        // Both printed with the other logs when the test fails.
        let (error_log, _) = scene.log("nginx-error");
        let (access_log, _) = scene.log("access");
        let (d, t) = (dir.display(), temp.display());
        let (e, a) = (error_log.display(), access_log.display());
        let conf = format!(
            "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {e} warn;
events {{}}
http {{
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    log_format upstream '$remote_addr \"$request\" $status upstream=$upstream_addr $request_time';
    upstream custard {{
        least_conn;
{servers}    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    server {{
        listen {address};
        location / {{
            proxy_pass http://custard;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 1h;
            proxy_buffering off;
            add_header X-Custard-Upstream $upstream_addr always;
            access_log {a} upstream;
        }}
    }}
}}
"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writing nginx.conf");
        let mut process = Process::spawn(scene, "nginx", binary, |c| {
            c.arg("-p").arg(dir).arg("-c").arg(&conf_path).arg("-e").arg(&error_log);
        });
        let deadline = Instant::now() + WAIT;
        loop {
            process.assert_running();
            if custard_testkit::processes::http_status(&address, "GET", "/health", "").await
                == Some(200)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not pass /health through on {address} within {WAIT:?}:\n{}",
                std::fs::read_to_string(&error_log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let version = std::process::Command::new(binary)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().replace("nginx version: ", ""))
            .unwrap_or_default();
        Nginx { _process: process, address, version }
    }

    fn base(&self) -> String {
        format!("http://{}", self.address)
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// How one question went.
#[derive(Debug)]
struct Asked {
    status: StatusCode,
    body: Value,
    /// The replica nginx passed it to (the last one it tried).
    upstream: Option<String>,
    elapsed: Duration,
}

/// Asks `question` about `connection`, keeping nginx's upstream header.
async fn ask(api: &Api, connection: &str, question: &str) -> Result<Asked, reqwest::Error> {
    let started = Instant::now();
    let response = api
        .request(Method::POST, "/api/v1/query")
        .json(&json!({"connection_id": connection, "question": question}))
        .send()
        .await?;
    let status = response.status();
    // `a, b` when nginx tried `a` first.
    let upstream = response
        .headers()
        .get("x-custard-upstream")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|v| v.trim().to_owned());
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Asked { status, body, upstream, elapsed: started.elapsed() })
}

/// Polls the connection through `api` until `want` holds; returns how long that took.
async fn wait_until(
    api: &Api,
    connection: &Connection,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    let path = format!("/api/v1/connections/{}", connection.id);
    loop {
        let (status, reply) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        if want(&reply) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT,
            "connection {} was not {what} within {WAIT:?}: {reply}",
            connection.label
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `done` until it holds; returns how long that took. `context` is
/// printed when it does not within [`WAIT`].
async fn wait_for(what: &str, done: impl Fn() -> bool, context: impl Fn() -> String) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "waited {WAIT:?} for {what}:\n{}", context());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// A connection's history, paging through it: each question's id and outcome.
async fn history(api: &Api, connection: &str) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut offset = 0u64;
    loop {
        let (status, page) = api
            .get(&format!("/api/v1/queries?connection_id={connection}&limit=200&offset={offset}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for q in page["queries"].as_array().expect("queries") {
            let id = q["id"].as_str().expect("a query's id").to_owned();
            entries.insert(id, q["outcome"].as_str().unwrap_or("<no outcome>").to_owned());
        }
        match page["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => return entries,
        }
    }
}

/// How long the hub waits for an agent's reply: the query timeout plus its grace.
fn patience() -> Duration {
    let timeout = Duration::from_secs(QUERY_TIMEOUT_SECS);
    timeout + timeout.min(Duration::from_secs(5))
}

fn online_with_schema(c: &Value) -> bool {
    c["status"] == "online" && c["schema_fingerprint"].is_string()
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// One line of the results table.
fn report(step: &str, result: &str, time: Duration) {
    eprintln!("replicas-table | {step} | {result} | {}", secs(time));
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The agent binary, built first (outside the time limit: cargo may wait
/// for the build directory's lock).
async fn agent_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| workspace_binary("custard-agent"))
        .await
        .expect("building the agent")
}

/// The NATS server the replicas route through.
fn nats_url() -> String {
    std::env::var("CUSTARD_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
}

/// Panics unless a NATS server greets a client (`INFO {...}`) at `url`.
async fn assert_nats_answers(url: &str) {
    use tokio::io::AsyncReadExt;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split(['/', ',']).next().unwrap_or(host_port);
    let greeting = async {
        let mut stream = tokio::net::TcpStream::connect(host_port).await.ok()?;
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).await.ok()?;
        (&first == b"INFO ").then_some(())
    };
    let answered = tokio::time::timeout(Duration::from_secs(3), greeting).await.ok().flatten();
    assert!(answered.is_some(), "NATS does not answer at {url}; run scripts/ensure-nats.sh");
}

/// nginx: on the `PATH` or at /usr/sbin/nginx.
fn nginx_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is required for this test but is not installed; run scripts/ensure-nginx.sh"
            )
        })
}

/// The fake model: the SQL for each question's marker.
async fn fake_model() -> FakeOpenAi {
    FakeOpenAi::with_responder(|request| {
        let question = request.last_user_message().unwrap_or_default();
        let sql = if question.contains("Q-SLOW") { SLOW_SQL } else { FAST_SQL };
        Behaviour::reply(format!("```sql\n{sql}\n```"))
    })
    .await
}

/// A shop in a scratch database of the shared PostgreSQL, with a reader role:
/// `items` rows and a view that sleeps [`SLOW_SECS`] when read.
struct Shop {
    db: ReadableDb,
}

impl Shop {
    async fn create(prefix: &str, items: i64) -> Shop {
        let db = ReadableDb::create(prefix).await;
        let reader = &db.reader.name;
        let sql = format!(
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {items}) AS g;
             CREATE VIEW slow_answer AS SELECT 42 AS answer FROM pg_sleep({SLOW_SECS});
             GRANT USAGE ON SCHEMA public TO \"{reader}\";
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{reader}\";"
        );
        db.db.client().await.batch_execute(&sql).await.expect("the shop");
        Shop { db }
    }

    fn reader_url(&self) -> String {
        self.db.reader_url()
    }

    /// Waits until `count` sessions of the shop run a query containing `needle`.
    async fn wait_for_busy(&self, needle: &str, count: usize) {
        let client = self.db.db.client().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let busy = busy_sessions(&client, needle).await;
            if busy >= count as i64 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {busy} of {count} queries with {needle} ran within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sessions of this database busy with a query that contains `needle`.
async fn busy_sessions(client: &tokio_postgres::Client, needle: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state <> 'idle' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
            &[&needle],
        )
        .await
        .expect("reading pg_stat_activity")
        .get(0)
}

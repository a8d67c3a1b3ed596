//! A fake Bot API server for tests: a small HTTP/1.1 server on 127.0.0.2 that speaks the
//! methods the bot uses (`POST /bot<token>/<Method>`, JSON bodies) the way Telegram does:
//! long-polling GetUpdates that honours `offset` (updates below it are confirmed and
//! forgotten) and answers 409 Conflict to a poll superseded by a newer one.
//!
//! Each node gets its own listening port ([`FakeTelegram::url_for`]), so the server knows which
//! node made each call: tests assert which node polled, answered, and when.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

pub const BOT_ID: u64 = 7_000_000_001;
pub const BOT_USERNAME: &str = "constella_test_bot";
const CONFLICT: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

/// A Telegram user that writes to the bot.
#[derive(Debug, Clone)]
pub struct TgUser {
    pub id: u64,
    pub username: Option<String>,
}

impl TgUser {
    pub fn new(id: u64, username: &str) -> Self {
        Self {
            id,
            username: Some(username.to_owned()),
        }
    }
    fn json(&self) -> Value {
        let mut user = json!({"id": self.id, "is_bot": false, "first_name": "User"});
        if let Some(name) = &self.username {
            user["username"] = json!(name);
        }
        user
    }
    fn chat(&self) -> Value {
        let mut chat = json!({"id": self.id, "type": "private", "first_name": "User"});
        if let Some(name) = &self.username {
            chat["username"] = json!(name);
        }
        chat
    }
}

/// One Bot API call as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub node: String,
    pub method: String,
    pub body: Value,
    pub at: Instant,
}

/// How a GetUpdates ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollEnd {
    /// Answered with these update ids (maybe none, on timeout).
    Updates(Vec<u32>),
    /// Superseded by a newer poll: answered 409.
    Conflict,
    /// The client closed the connection while waiting.
    Dropped,
}

/// One GetUpdates.
#[derive(Debug, Clone)]
pub struct Poll {
    pub node: String,
    pub offset: i64,
    pub started: Instant,
    pub ended: Option<(Instant, PollEnd)>,
}

/// A message the bot sent (and maybe edited since).
#[derive(Debug, Clone)]
pub struct BotMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub text: String,
    pub markup: Option<Value>,
    /// The node that sent it, and the nodes that edited it.
    pub sent_by: String,
    pub edited_by: Vec<String>,
}

impl BotMessage {
    /// The buttons as (text, callback data), row by row.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let Some(markup) = &self.markup else {
            return Vec::new();
        };
        markup["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["text"].as_str().unwrap_or_default().to_owned(),
                    b["callback_data"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The callback data of the button whose text contains `label`.
    pub fn button(&self, label: &str) -> Option<String> {
        self.buttons()
            .into_iter()
            .find(|(text, _)| text.contains(label))
            .map(|(_, data)| data)
    }
}

/// A photo the bot sent (`sendPhoto`, multipart/form-data).
#[derive(Debug, Clone)]
pub struct Photo {
    pub node: String,
    pub chat_id: i64,
    pub caption: String,
    /// The file name the client gave the upload.
    pub file_name: String,
    /// The uploaded bytes (a PNG for a chart).
    pub bytes: Vec<u8>,
    pub at: Instant,
}

/// One field of a multipart/form-data body: its name, its file name if it is a file, its bytes.
type Field = (String, Option<String>, Vec<u8>);

/// The fields of a multipart/form-data body.
fn multipart_fields(content_type: &str, body: &[u8]) -> Option<Vec<Field>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = Vec::new();
    let mut rest = body;
    loop {
        let start = rest
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_slice())?;
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            return Some(fields);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let end = rest
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_slice())?;
        let data = rest[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&rest[..end])
            .to_vec();
        rest = &rest[end..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let param = |key: &str| {
            disposition.split(';').map(str::trim).find_map(|p| {
                p.strip_prefix(key)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        fields.push((param("name")?, param("filename"), data));
    }
}

#[derive(Default)]
struct State {
    token: String,
    next_update_id: u32,
    /// Updates not yet confirmed, in order.
    pending: Vec<(u32, Value)>,
    next_message_id: i64,
    messages: HashMap<i64, BotMessage>,
    calls: Vec<Call>,
    polls: Vec<Poll>,
    /// The poll waiting now: its index in `polls` and how to end it with 409.
    active: Option<(usize, oneshot::Sender<()>)>,
    /// Update id → nodes it was delivered to.
    delivered: HashMap<u32, Vec<String>>,
    callback_answers: Vec<(String, Value)>,
    /// Calls refused with 401 (wrong token): (node, method).
    unauthorized: Vec<(String, String)>,
    photos: Vec<Photo>,
}

/// The fake server. Dropping it stops it.
pub struct FakeTelegram {
    runtime: tokio::runtime::Runtime,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    pub token: String,
}

impl FakeTelegram {
    pub fn start(token: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = State {
            token: token.to_owned(),
            next_update_id: 100,
            next_message_id: 1,
            ..State::default()
        };
        Self {
            runtime,
            state: Arc::new(Mutex::new(state)),
            notify: Arc::new(Notify::new()),
            token: token.to_owned(),
        }
    }

    /// From now on only `token` is accepted (a token change at @BotFather).
    pub fn set_token(&self, token: &str) {
        self.state.lock().unwrap().token = token.to_owned();
    }

    /// A base URL for `--telegram-api-url` whose calls are recorded as made by `node`. It is on
    /// 127.0.0.2, so its port can never be one that `free_port` handed to a node on 127.0.0.1.
    pub fn url_for(&self, node: &str) -> String {
        self.url_for_at(node, "127.0.0.2")
    }

    /// Like [`FakeTelegram::url_for`], listening on `ip` (e.g. a Docker network's gateway, so
    /// that containers reach it).
    pub fn url_for_at(&self, node: &str, ip: &str) -> String {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, notify, node) = (self.state.clone(), self.notify.clone(), node.to_owned());
        self.runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, notify, node) = (state.clone(), notify.clone(), node.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(stream, state, notify, node).await;
                });
            }
        });
        // With a path prefix and a trailing slash, as a reverse proxy might be configured.
        format!("http://{ip}:{port}/telegram/")
    }

    fn push_update(&self, make: impl FnOnce(u32) -> Value) -> u32 {
        let id = {
            let mut state = self.state.lock().unwrap();
            let id = state.next_update_id;
            state.next_update_id += 1;
            let update = make(id);
            state.pending.push((id, update));
            id
        };
        self.notify.notify_waiters();
        id
    }

    /// `user` writes `text` to the bot in their private chat. Returns the update id.
    pub fn send_text(&self, user: &TgUser, text: &str) -> u32 {
        let now = unix_now();
        let (from, chat) = (user.json(), user.chat());
        self.push_update(|id| {
            let mut message = json!({
                "message_id": 10_000 + id,
                "date": now,
                "chat": chat,
                "from": from,
                "text": text,
            });
            if text.starts_with('/') {
                let len = text.split_whitespace().next().unwrap_or("").chars().count();
                message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
            }
            json!({"update_id": id, "message": message})
        })
    }

    /// `user` presses a button with `data` under the bot's message `message_id`.
    pub fn press(&self, user: &TgUser, message_id: i64, data: &str) -> u32 {
        let message = self
            .state
            .lock()
            .unwrap()
            .messages
            .get(&message_id)
            .cloned();
        let message = message.expect("no such bot message");
        let from = user.json();
        let message_json = bot_message_json(&message);
        self.push_update(|id| {
            json!({"update_id": id, "callback_query": {
                "id": format!("cq-{id}"),
                "from": from,
                "message": message_json,
                "chat_instance": format!("ci-{}", message.chat_id),
                "data": data,
            }})
        })
    }

    /// `user` presses `data` under `message_id` and waits for the bot to answer that press;
    /// returns the AnswerCallbackQuery body (its `text` is the toast, if any).
    pub fn press_for_answer(
        &self,
        user: &TgUser,
        message_id: i64,
        data: &str,
        deadline: Duration,
    ) -> Value {
        let answers = self.callback_answers().len();
        self.press(user, message_id, data);
        super::wait_for(deadline, "the answer to a button press", || {
            self.callback_answers()
                .get(answers)
                .map(|(_, body)| body.clone())
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn polls(&self) -> Vec<Poll> {
        self.state.lock().unwrap().polls.clone()
    }

    /// Nodes each update was delivered to.
    pub fn delivered(&self) -> HashMap<u32, Vec<String>> {
        self.state.lock().unwrap().delivered.clone()
    }

    /// Calls refused for a wrong token: (node, method).
    pub fn unauthorized(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().unauthorized.clone()
    }

    /// Texts of AnswerCallbackQuery calls: (node, body).
    /// Photos the bot sent, oldest first.
    pub fn photos(&self) -> Vec<Photo> {
        self.state.lock().unwrap().photos.clone()
    }

    pub fn callback_answers(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().callback_answers.clone()
    }

    /// Every message the bot sent to `chat_id`, oldest first, with its current text.
    pub fn messages_to(&self, chat_id: u64) -> Vec<BotMessage> {
        let state = self.state.lock().unwrap();
        let mut messages: Vec<BotMessage> = state
            .messages
            .values()
            .filter(|m| m.chat_id == chat_id as i64)
            .cloned()
            .collect();
        messages.sort_by_key(|m| m.message_id);
        messages
    }

    /// The bot message `message_id` as it is now.
    pub fn message(&self, message_id: i64) -> BotMessage {
        self.state.lock().unwrap().messages[&message_id].clone()
    }

    /// Waits until a message to `chat_id` satisfies `check` (new or edited); returns it.
    pub fn wait_message(
        &self,
        deadline: Duration,
        what: &str,
        chat_id: u64,
        check: impl Fn(&BotMessage) -> bool,
    ) -> BotMessage {
        super::wait_for(deadline, what, || {
            self.messages_to(chat_id).into_iter().find(|m| check(m))
        })
    }

    /// Calls of `method` (case-insensitive) made after `since`.
    pub fn calls_of(&self, method: &str, since: Instant) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method.eq_ignore_ascii_case(method) && c.at >= since)
            .collect()
    }

    /// The nodes whose polls were waiting at some moment in `[from, to]`.
    pub fn pollers_between(&self, from: Instant, to: Instant) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .polls()
            .into_iter()
            .filter(|p| p.started <= to && p.ended.as_ref().is_none_or(|(end, _)| *end >= from))
            .map(|p| p.node)
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Starts a second bot instance outside the network (or a partitioned second leader): every
    /// `every` it long-polls the same token, which ends the network's poll with 409, as
    /// Telegram does. Returns a handle that stops it.
    pub fn start_intruder(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let state = self.state.clone();
        self.runtime.spawn(async move {
            loop {
                {
                    let mut s = state.lock().unwrap();
                    if let Some((old, cancel)) = s.active.take() {
                        let _ = cancel.send(());
                        s.polls[old].ended = Some((Instant::now(), PollEnd::Conflict));
                    }
                    // The intruder's own poll: it waits until someone supersedes it.
                    let (tx, _rx) = oneshot::channel();
                    s.polls.push(Poll {
                        node: "intruder".to_owned(),
                        offset: 0,
                        started: Instant::now(),
                        ended: None,
                    });
                    let index = s.polls.len() - 1;
                    s.active = Some((index, tx));
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Stops an intruder: its waiting poll ends as if its process went away.
    pub fn stop_intruder(&self, intruder: tokio::task::JoinHandle<()>) {
        intruder.abort();
        let _ = self.runtime.block_on(intruder);
        let mut guard = self.state.lock().unwrap();
        let s = &mut *guard;
        if let Some((index, _)) = s
            .active
            .take_if(|(i, _)| s_node_is(&s.polls, *i, "intruder"))
        {
            s.polls[index].ended = Some((Instant::now(), PollEnd::Dropped));
        }
    }

    /// How many polls were ended with 409.
    pub fn conflicts(&self) -> usize {
        self.polls()
            .iter()
            .filter(|p| matches!(p.ended, Some((_, PollEnd::Conflict))))
            .count()
    }
}

fn s_node_is(polls: &[Poll], index: usize, node: &str) -> bool {
    polls.get(index).is_some_and(|p| p.node == node)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Constella", "username": BOT_USERNAME})
}

fn bot_message_json(message: &BotMessage) -> Value {
    let mut value = json!({
        "message_id": message.message_id,
        "date": unix_now(),
        "chat": {"id": message.chat_id, "type": "private", "first_name": "User"},
        "from": bot_user(),
        "text": message.text,
    });
    if let Some(markup) = &message.markup {
        value["reply_markup"] = markup.clone();
    }
    value
}

fn ok(result: Value) -> (u16, Value) {
    (200, json!({"ok": true, "result": result}))
}

fn error(code: u16, description: &str) -> (u16, Value) {
    (
        code,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

/// One HTTP/1.1 connection: requests one after another (keep-alive).
async fn serve_connection(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    node: String,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let content_type = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        let length: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let total = head_end + 4 + length;
        while buf.len() < total {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let raw = &buf[head_end + 4..total];
        // A multipart upload (sendPhoto): its text fields become the JSON body, its file is kept.
        let mut upload = None;
        let body: Value = if content_type.starts_with("multipart/form-data") {
            let mut object = serde_json::Map::new();
            for (name, file_name, data) in multipart_fields(&content_type, raw).unwrap_or_default()
            {
                match file_name {
                    Some(file_name) => upload = Some((file_name, data)),
                    None => {
                        let text = String::from_utf8_lossy(&data).into_owned();
                        let value = text.parse::<i64>().map_or(json!(text), |n| json!(n));
                        object.insert(name, value);
                    }
                }
            }
            Value::Object(object)
        } else {
            serde_json::from_slice(raw).unwrap_or(json!({}))
        };
        buf.drain(..total);

        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        // `/<prefix>/bot<token>/<Method>`: the prefix is whatever the base URL had.
        let segments: Vec<&str> = path.split('/').collect();
        let at = segments.iter().position(|s| s.starts_with("bot"));
        let token = at.map_or("", |i| &segments[i]["bot".len()..]);
        let method = at
            .and_then(|i| segments.get(i + 1))
            .map_or_else(String::new, |m| (*m).to_owned());
        let expected = state.lock().unwrap().token.clone();
        let (status, answer) = if path.contains("//") || !path.starts_with("/telegram/bot") {
            error(404, "Not Found")
        } else if token != expected {
            state
                .lock()
                .unwrap()
                .unauthorized
                .push((node.clone(), method.clone()));
            error(401, "Unauthorized")
        } else {
            state.lock().unwrap().calls.push(Call {
                node: node.clone(),
                method: method.clone(),
                body: body.clone(),
                at: Instant::now(),
            });
            if method.eq_ignore_ascii_case("getUpdates") {
                match get_updates(&mut stream, &mut buf, &state, &notify, &node, &body).await {
                    Some(answer) => answer,
                    None => return Ok(()),
                }
            } else if method.eq_ignore_ascii_case("sendPhoto") {
                send_photo(&state, &node, &body, upload)
            } else {
                handle(&state, &node, &method, &body)
            }
        };
        let text = answer.to_string();
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}

/// `sendPhoto` with an uploaded file: kept for the test, answered like Telegram (a message
/// with a `photo` array).
fn send_photo(
    state: &Arc<Mutex<State>>,
    node: &str,
    body: &Value,
    upload: Option<(String, Vec<u8>)>,
) -> (u16, Value) {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return error(400, "Bad Request: chat not found");
    };
    let Some((file_name, bytes)) = upload else {
        return error(400, "Bad Request: there is no photo in the request");
    };
    let mut s = state.lock().unwrap();
    let message_id = s.next_message_id;
    s.next_message_id += 1;
    let caption = body["caption"].as_str().unwrap_or_default().to_owned();
    let size = bytes.len();
    s.photos.push(Photo {
        node: node.to_owned(),
        chat_id,
        caption: caption.clone(),
        file_name,
        bytes,
        at: Instant::now(),
    });
    ok(json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": {"id": chat_id, "type": "private", "first_name": "User"},
        "from": bot_user(),
        "caption": caption,
        "photo": [{"file_id": format!("photo{message_id}"), "file_unique_id": format!("u{message_id}"),
                   "width": 1000, "height": 1100, "file_size": size}],
    }))
}

/// A long poll. `None` when the client went away while it waited.
async fn get_updates(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    state: &Arc<Mutex<State>>,
    notify: &Arc<Notify>,
    node: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let offset = body["offset"].as_i64().unwrap_or(0);
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
    let limit = body["limit"].as_u64().unwrap_or(100) as usize;
    let (index, mut cancelled) = {
        let mut s = state.lock().unwrap();
        if offset > 0 {
            s.pending.retain(|(id, _)| i64::from(*id) >= offset);
        }
        // Telegram ends the older poll with 409 when a newer one arrives.
        if let Some((old, cancel)) = s.active.take() {
            let _ = cancel.send(());
            s.polls[old].ended = Some((Instant::now(), PollEnd::Conflict));
        }
        let (tx, rx) = oneshot::channel();
        s.polls.push(Poll {
            node: node.to_owned(),
            offset,
            started: Instant::now(),
            ended: None,
        });
        let index = s.polls.len() - 1;
        s.active = Some((index, tx));
        (index, rx)
    };
    let finish = |end: PollEnd| {
        let mut s = state.lock().unwrap();
        if s.active.as_ref().is_some_and(|(i, _)| *i == index) {
            s.active = None;
        }
        if s.polls[index].ended.is_none() {
            s.polls[index].ended = Some((Instant::now(), end));
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 1024];
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let ready: Vec<(u32, Value)> = {
            let s = state.lock().unwrap();
            s.pending.iter().take(limit).cloned().collect()
        };
        if !ready.is_empty() {
            // A poller that died while waiting must not count as having received them (the
            // kernel may not have woken the read below yet).
            match stream.try_read(&mut chunk) {
                Ok(0) => {
                    finish(PollEnd::Dropped);
                    return None;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            let ids: Vec<u32> = ready.iter().map(|(id, _)| *id).collect();
            {
                let mut s = state.lock().unwrap();
                for id in &ids {
                    s.delivered.entry(*id).or_default().push(node.to_owned());
                }
            }
            finish(PollEnd::Updates(ids));
            return Some(ok(Value::Array(
                ready.into_iter().map(|(_, u)| u).collect(),
            )));
        }
        tokio::select! {
            () = &mut notified => {}
            _ = &mut cancelled => return Some(error(409, CONFLICT)),
            () = tokio::time::sleep_until(deadline) => {
                finish(PollEnd::Updates(Vec::new()));
                return Some(ok(json!([])));
            }
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => {
                    finish(PollEnd::Dropped);
                    return None;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
}

fn handle(state: &Arc<Mutex<State>>, node: &str, method: &str, body: &Value) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    match method.to_ascii_lowercase().as_str() {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Constella", "username": BOT_USERNAME,
            "can_join_groups": false, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        })),
        "getwebhookinfo" => {
            ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "deletewebhook" | "setmycommands" => ok(json!(true)),
        "sendmessage" => {
            let Some(chat_id) = body["chat_id"].as_i64() else {
                return error(400, "Bad Request: chat not found");
            };
            let message_id = s.next_message_id;
            s.next_message_id += 1;
            let message = BotMessage {
                message_id,
                chat_id,
                text: body["text"].as_str().unwrap_or_default().to_owned(),
                markup: body.get("reply_markup").cloned(),
                sent_by: node.to_owned(),
                edited_by: Vec::new(),
            };
            let answer = bot_message_json(&message);
            s.messages.insert(message_id, message);
            ok(answer)
        }
        "editmessagetext" | "editmessagereplymarkup" => {
            let id = body["message_id"].as_i64().unwrap_or(0);
            let Some(message) = s.messages.get_mut(&id) else {
                return error(400, "Bad Request: message to edit not found");
            };
            if message.chat_id != body["chat_id"].as_i64().unwrap_or(0) {
                return error(400, "Bad Request: message to edit not found");
            }
            let text = body["text"].as_str().map(str::to_owned);
            let markup = body.get("reply_markup").cloned();
            if text.as_ref().is_none_or(|t| *t == message.text) && markup == message.markup {
                return error(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
                );
            }
            if let Some(text) = text {
                message.text = text;
            }
            message.markup = markup;
            message.edited_by.push(node.to_owned());
            let answer = bot_message_json(message);
            ok(answer)
        }
        "answercallbackquery" => {
            s.callback_answers.push((node.to_owned(), body.clone()));
            ok(json!(true))
        }
        _ => error(404, "Not Found"),
    }
}

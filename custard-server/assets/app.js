// Custard's page script: streams answers on the Ask page, keeps connection
// statuses live, copies, sorts tables. No framework; htmx handles the rest.
"use strict";

(function () {
  // Copy buttons: data-copy="#element" copies the element's text.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    // The label is kept once, so a second click does not make "Copied" stick.
    if (!button.hasAttribute("data-copy-label")) {
      button.setAttribute("data-copy-label", button.textContent);
    }
    var done = function () {
      button.textContent = "Copied";
      clearTimeout(button.copyTimer);
      button.copyTimer = setTimeout(function () {
        button.textContent = button.getAttribute("data-copy-label");
      }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(source, done); });
    } else {
      fallbackCopy(source, done);
    }
  });

  function fallbackCopy(source, done) {
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selected */ }
  }

  // Sortable result tables: a click on a header sorts by that column.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("th button.sort");
    if (!button) return;
    var th = button.closest("th");
    var table = th.closest("table");
    var index = Number(button.getAttribute("data-col"));
    var numeric = th.hasAttribute("data-numeric");
    var dir = button.getAttribute("data-dir") === "asc" ? "desc" : "asc";
    table.querySelectorAll("th button.sort").forEach(function (b) { b.removeAttribute("data-dir"); });
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    button.setAttribute("data-dir", dir);
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var key = function (row) {
      var cell = row.cells[index];
      if (!cell) return null;
      if (numeric) return cell.hasAttribute("data-v") ? Number(cell.getAttribute("data-v")) : null;
      return cell.textContent;
    };
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === y) return 0;
      if (x === null) return 1; // nulls last either way
      if (y === null) return -1;
      var order = numeric ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return dir === "asc" ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });

  // Live connection status: every [data-status-for] element follows the
  // server's status stream (snapshot first, then changes).
  function updateStatus(id, status) {
    document.querySelectorAll('[data-status-for="' + CSS.escape(id) + '"]').forEach(function (el) {
      if (el.tagName === "OPTION") {
        el.setAttribute("data-status", status);
        el.textContent = el.getAttribute("data-name") + " (" + status + ")";
      } else {
        el.textContent = status;
        el.className = el.className.replace(/\b(online|offline|pending)\b/g, "").trim() + " " + status;
      }
    });
    showSelectedStatus();
  }

  // The other live fields of a connection, as the templates render them:
  // last seen ([data-seen-for]), agent version ([data-version-for]), schema
  // refreshed ([data-schema-for]), and the note that a new schema was read
  // ([data-schema-note-for], whose data-fingerprint is the schema shown).
  function mutedText(text) {
    var span = document.createElement("span");
    span.className = "muted";
    span.textContent = text;
    return span;
  }
  function relativeTimeOf(iso) {
    var time = document.createElement("time");
    time.setAttribute("datetime", iso);
    time.setAttribute("data-show", "relative");
    return time;
  }
  function fillConnectionField(selector, id, node) {
    document.querySelectorAll("[" + selector + '="' + CSS.escape(id) + '"]').forEach(function (el) {
      el.replaceChildren(typeof node === "string" ? document.createTextNode(node) : node.cloneNode(true));
      showTimes(el);
    });
  }
  function updateConnectionFields(data) {
    // A deleted connection's event has its status only.
    if (!("last_seen_at" in data)) return;
    fillConnectionField("data-seen-for", data.id, data.status === "online" ? "online now"
      : data.last_seen_at ? relativeTimeOf(data.last_seen_at) : mutedText("never connected"));
    fillConnectionField("data-version-for", data.id, data.agent_version || mutedText("none yet"));
    fillConnectionField("data-schema-for", data.id,
      data.schema_refreshed_at ? relativeTimeOf(data.schema_refreshed_at) : mutedText("not yet"));
    document.querySelectorAll('[data-schema-note-for="' + CSS.escape(data.id) + '"]').forEach(function (el) {
      var shown = el.getAttribute("data-fingerprint") || "";
      if (data.schema_fingerprint && data.schema_fingerprint !== shown) el.hidden = false;
    });
  }

  var statusSource = null;
  function startStatusStream() {
    if (!document.querySelector("[data-status-for]") || !window.EventSource) return;
    if (statusSource) statusSource.close();
    statusSource = new EventSource("/api/v1/connections/events");
    statusSource.addEventListener("status", function (event) {
      try {
        var data = JSON.parse(event.data);
        if (data.id && data.status) {
          updateStatus(data.id, data.status);
          updateConnectionFields(data);
          // The Ask page's examples follow the selected connection's schema.
          document.dispatchEvent(new CustomEvent("custard:connection", { detail: data }));
        }
      } catch (e) { /* a malformed event changes nothing */ }
    });
    // The server fell behind and dropped events: a new stream starts with a snapshot.
    statusSource.addEventListener("resync", startStatusStream);
  }
  window.addEventListener("pagehide", function () { if (statusSource) statusSource.close(); });
  // Back from another page (bfcache): the stream closed on leaving starts again.
  window.addEventListener("pageshow", function (event) { if (event.persisted) startStatusStream(); });

  // The Ask page.
  var form = document.getElementById("ask-form");
  var select = document.getElementById("connection");

  function showSelectedStatus() {
    if (!select) return;
    var badge = document.querySelector("[data-selected-status]");
    var option = select.options[select.selectedIndex];
    if (!badge || !option) return;
    var status = option.getAttribute("data-status") || "";
    badge.textContent = status;
    badge.className = "status " + status;
  }

  function parseEvents(buffer, onEvent) {
    var blocks = buffer.split(/\r?\n\r?\n/);
    var rest = blocks.pop();
    blocks.forEach(function (block) {
      var name = "message", data = [];
      block.split(/\r?\n/).forEach(function (line) {
        if (line.indexOf("event:") === 0) name = line.slice(6).trim();
        else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
      });
      if (data.length) onEvent(name, data.join("\n"));
    });
    return rest;
  }

  // Conversations: the cards of one conversation are one thread, the newest
  // conversation first, its questions in the order they were asked.
  function newConversationId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function labelThread(thread) {
    var count = thread.querySelectorAll(":scope > article").length;
    var current = thread.classList.contains("current");
    thread.querySelector(".thread-label").textContent =
      (current ? "Current conversation" : "Earlier conversation") +
      " · " + count + (count === 1 ? " question" : " questions");
  }

  // Ends the current thread: the next question starts another.
  function endConversation() {
    document.getElementById("conversation-id").value = "";
    document.getElementById("new-conversation").hidden = true;
    document.querySelectorAll("#answers > .thread.current").forEach(function (thread) {
      thread.classList.remove("current");
      labelThread(thread);
    });
  }

  function currentThread() {
    var answers = document.getElementById("answers");
    var id = document.getElementById("conversation-id").value;
    var found = null;
    answers.querySelectorAll(":scope > .thread").forEach(function (thread) {
      if (thread.getAttribute("data-conversation") === id) found = thread;
    });
    if (found) return found;
    answers.querySelectorAll(":scope > .thread.current").forEach(function (thread) {
      thread.classList.remove("current");
      labelThread(thread);
    });
    var thread = document.createElement("section");
    thread.className = "thread current";
    thread.setAttribute("data-conversation", id);
    var label = document.createElement("p");
    label.className = "thread-label";
    label.id = "thread-" + (id || newConversationId());
    thread.setAttribute("aria-labelledby", label.id);
    thread.appendChild(label);
    answers.insertBefore(thread, answers.firstChild);
    return thread;
  }

  // Puts a card at the end of the current conversation's thread.
  function placeCard(card) {
    var thread = currentThread();
    thread.appendChild(card);
    labelThread(thread);
    document.getElementById("new-conversation").hidden = false;
    card.scrollIntoView({ block: "start" });
  }

  function insertCard(html) {
    var holder = document.createElement("div");
    holder.innerHTML = html;
    var card = holder.firstElementChild;
    if (!card) return null;
    placeCard(card);
    if (window.htmx) window.htmx.process(card);
    return card;
  }

  var asking = false;
  function ask(event) {
    event.preventDefault();
    // Enter while an answer is on its way does not ask twice.
    if (asking) return;
    var question = document.getElementById("question");
    if (!question.value.trim()) {
      question.setAttribute("aria-invalid", "true");
      question.focus();
      return;
    }
    question.removeAttribute("aria-invalid");
    var asked = question.value.trim();
    // The page names each conversation, so a failed first question has its thread too.
    var conversation = document.getElementById("conversation-id");
    if (!conversation.value) conversation.value = newConversationId();
    var button = document.getElementById("ask-button");
    var progress = document.getElementById("progress");
    var steps = document.getElementById("steps");
    steps.innerHTML = "";
    progress.hidden = false;
    button.disabled = true;
    button.textContent = "Asking…";
    var current = null;
    var step = function (label) {
      if (current) { current.className = "done"; }
      current = document.createElement("li");
      current.className = "current";
      current.textContent = label;
      steps.appendChild(current);
    };
    step("Sending the question");
    asking = true;
    var finished = false;
    var finish = function () {
      finished = true;
      asking = false;
      button.disabled = false;
      button.textContent = "Ask";
      progress.hidden = true;
    };
    var onEvent = function (name, data) {
      if (name === "step") {
        try { step(JSON.parse(data).label); } catch (e) { /* ignore */ }
      } else if (name === "answer") {
        var card = insertCard(data);
        if (card) {
          conversation.value = card.getAttribute("data-conversation") || conversation.value;
          question.value = "";
        }
        finish();
        question.focus();
      } else if (name === "error") {
        // The question stays in the box, to be corrected and asked again.
        insertCard(data);
        finish();
        question.focus();
      }
    };
    var body = new URLSearchParams(new FormData(form));
    fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Accept": "text/event-stream" },
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (response.redirected && /\/login$/.test(response.url)) { window.location = "/login"; return; }
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        return response.text().then(function (text) {
          var message = "The server answered " + response.status + ". Try again.";
          if (response.status === 403) message = "The page expired: reload it and ask again.";
          try { message = JSON.parse(text).error.message; } catch (e) { /* an HTML page */ }
          showError(message);
        });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var pump = function () {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            parseEvents(buffer + "\n\n", onEvent);
            if (!finished) showError("The connection to the server closed before the answer came.");
            return;
          }
          buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), onEvent);
          return pump();
        });
      };
      return pump();
    }).catch(function () {
      showError("Custard could not be reached. Check your network and try again.");
    });

    function showError(message) {
      var card = document.createElement("article");
      card.className = "card notice bad answer-error";
      card.setAttribute("role", "alert");
      var heading = document.createElement("h2");
      heading.className = "question";
      heading.textContent = asked;
      var title = document.createElement("p");
      title.className = "error-title";
      title.appendChild(document.createElement("strong")).textContent =
        "The question could not be asked";
      var text = document.createElement("p");
      text.textContent = message;
      card.appendChild(heading);
      card.appendChild(title);
      card.appendChild(text);
      placeCard(card);
      finish();
    }
  }

  // Example questions: a click asks one; they follow the selected connection.
  function loadExamples() {
    var box = document.getElementById("examples");
    if (!box || !select) return;
    var id = select.value;
    box.setAttribute("data-examples-for", id);
    box.setAttribute("data-state", "loading");
    fetch("/ask/examples?connection=" + encodeURIComponent(id), { credentials: "same-origin" })
      .then(function (response) {
        return response.ok && !response.redirected ? response.text() : null;
      })
      .then(function (html) {
        var shown = document.getElementById("examples");
        if (html === null || !shown || select.value !== id) return;
        var holder = document.createElement("div");
        holder.innerHTML = html;
        if (holder.firstElementChild) shown.replaceWith(holder.firstElementChild);
      })
      .catch(function () { /* no examples; asking works as before */ });
  }
  // The selected connection's schema arrived (its agent connected or it was refreshed).
  document.addEventListener("custard:connection", function (event) {
    var box = document.getElementById("examples");
    var data = event.detail || {};
    if (box && select && data.id === select.value && data.schema_fingerprint
        && box.getAttribute("data-state") === "pending") {
      loadExamples();
    }
  });

  if (form) {
    form.addEventListener("submit", ask);
    document.getElementById("question").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("click", function (event) {
      var example = event.target.closest("button.example");
      if (!example || asking) return;
      document.getElementById("question").value = example.getAttribute("data-question");
      form.requestSubmit();
    });
    document.getElementById("new-conversation").addEventListener("click", function () {
      endConversation();
      document.getElementById("question").focus();
    });
    select.addEventListener("change", function () {
      // Another database starts another conversation.
      endConversation();
      showSelectedStatus();
      loadExamples();
    });
    showSelectedStatus();
    var examples = document.getElementById("examples");
    if (examples && examples.getAttribute("data-state") === "loading") loadExamples();
    if (form.getAttribute("data-autorun") === "true") {
      form.requestSubmit();
      // Asked once: a reload is a fresh Ask page, as after any question.
      if (window.history.replaceState) {
        window.history.replaceState(null, "", "/?connection=" + encodeURIComponent(select.value));
      }
    } else {
      document.getElementById("question").focus();
    }
  }

  // Plain forms: the pressed button says it is working until the next page.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || form.hasAttribute("hx-post")) return;
    var button = event.submitter || form.querySelector("button[type=submit]");
    if (!button) return;
    form.setAttribute("aria-busy", "true");
    // After the submission has read the button's name and value.
    setTimeout(function () {
      button.setAttribute("data-label", button.textContent);
      button.textContent = "Working…";
      button.disabled = true;
    }, 0);
  });
  // Back from the next page (bfcache): the buttons work again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("button[data-label]").forEach(function (button) {
      button.textContent = button.getAttribute("data-label");
      button.removeAttribute("data-label");
      button.disabled = false;
      button.form && button.form.removeAttribute("aria-busy");
    });
  });

  // htmx requests that fail say so next to what was clicked.
  function htmxFailed(event, message) {
    var target = event.detail.elt;
    var note = target.querySelector(".htmx-error") || document.createElement("span");
    note.className = "error htmx-error";
    note.setAttribute("role", "alert");
    note.textContent = message;
    target.appendChild(note);
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    htmxFailed(event, status === 403 ? "The page expired: reload it and try again."
      : "That did not work (" + status + "). Try again.");
  });
  document.addEventListener("htmx:sendError", function (event) {
    htmxFailed(event, "Custard could not be reached. Check your network and try again.");
  });

  // Times: <time datetime data-show="exact|relative"> carry UTC text from the
  // server; show them in the browser's time zone, relative ones kept current.
  var exactFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  var relativeFormat = window.Intl && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  var units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
    ["hour", 3600], ["minute", 60]];
  function relativeText(when) {
    var seconds = (when.getTime() - Date.now()) / 1000;
    if (!relativeFormat) return exactFormat.format(when);
    if (Math.abs(seconds) < 45) return seconds <= 0 ? "just now" : "in a moment";
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1] || units[i][0] === "minute") {
        return relativeFormat.format(Math.round(seconds / units[i][1]), units[i][0]);
      }
    }
    return exactFormat.format(when);
  }
  function showTimes(root) {
    var times = (root || document).querySelectorAll("time[datetime][data-show]");
    for (var i = 0; i < times.length; i++) {
      var when = new Date(times[i].getAttribute("datetime"));
      if (isNaN(when.getTime())) continue;
      var exact = exactFormat.format(when);
      times[i].title = exact;
      times[i].textContent =
        times[i].getAttribute("data-show") === "relative" ? relativeText(when) : exact;
    }
  }
  window.custardShowTimes = showTimes;
  showTimes(document);
  setInterval(function () { showTimes(document); }, 30000);
  new MutationObserver(function (changes) {
    for (var i = 0; i < changes.length; i++) {
      for (var j = 0; j < changes[i].addedNodes.length; j++) {
        var node = changes[i].addedNodes[j];
        if (node.nodeType === 1) showTimes(node.parentNode || node);
      }
    }
  }).observe(document.body, { childList: true, subtree: true });

  startStatusStream();
})();

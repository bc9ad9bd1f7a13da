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

  var statusSource = null;
  function startStatusStream() {
    if (!document.querySelector("[data-status-for]") || !window.EventSource) return;
    if (statusSource) statusSource.close();
    statusSource = new EventSource("/api/v1/connections/events");
    statusSource.addEventListener("status", function (event) {
      try {
        var data = JSON.parse(event.data);
        if (data.id && data.status) updateStatus(data.id, data.status);
      } catch (e) { /* a malformed event changes nothing */ }
    });
    // The server fell behind and dropped events: a new stream starts with a snapshot.
    statusSource.addEventListener("resync", startStatusStream);
  }
  window.addEventListener("pagehide", function () { if (statusSource) statusSource.close(); });

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

  function insertCard(html) {
    var answers = document.getElementById("answers");
    var holder = document.createElement("div");
    holder.innerHTML = html;
    var card = holder.firstElementChild;
    if (!card) return null;
    answers.appendChild(card);
    if (window.htmx) window.htmx.process(card);
    card.scrollIntoView({ block: "start" });
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
          document.getElementById("conversation-id").value = card.getAttribute("data-conversation");
          document.getElementById("new-conversation").hidden = false;
          question.value = "";
        }
        finish();
        question.focus();
      } else if (name === "error") {
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
      var title = document.createElement("h2");
      title.textContent = "The question could not be asked";
      var text = document.createElement("p");
      text.textContent = message;
      card.appendChild(title);
      card.appendChild(text);
      document.getElementById("answers").appendChild(card);
      finish();
    }
  }

  if (form) {
    form.addEventListener("submit", ask);
    document.getElementById("question").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    document.getElementById("new-conversation").addEventListener("click", function () {
      document.getElementById("conversation-id").value = "";
      document.getElementById("answers").innerHTML = "";
      this.hidden = true;
      document.getElementById("question").focus();
    });
    select.addEventListener("change", function () {
      // Another database starts another conversation.
      document.getElementById("conversation-id").value = "";
      document.getElementById("new-conversation").hidden = true;
      showSelectedStatus();
    });
    showSelectedStatus();
    if (form.getAttribute("data-autorun") === "true") form.requestSubmit();
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

  startStatusStream();
})();

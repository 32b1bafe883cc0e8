// The console's only script: upload progress for the contact-list form, and live figures
// pushed over the WebSocket at /live into elements marked data-live="<name>".
(function () {
  "use strict";
  var upload = document.getElementById("upload");
  if (upload && window.XMLHttpRequest && window.FormData) {
    upload.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var bar = document.getElementById("upload-progress");
      bar.hidden = false;
      var xhr = new XMLHttpRequest();
      xhr.open("POST", upload.action);
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); }
      };
      xhr.onload = function () {
        if (xhr.responseURL && xhr.status < 400) { window.location.href = xhr.responseURL; }
        else { document.open(); document.write(xhr.responseText); document.close(); }
      };
      xhr.send(new FormData(upload));
    });
  }
  var live = document.querySelectorAll("[data-live]");
  if (live.length === 0 || !window.WebSocket) { return; }
  var scope = document.querySelector("[data-campaign]");
  var campaign = scope ? scope.getAttribute("data-campaign") : null;
  function put(root, name, value) {
    var el = root.querySelector('[data-live="' + name + '"]');
    if (el) { el.textContent = value; }
  }
  function row(table, key, cells) {
    var body = document.querySelector("#" + table + " tbody");
    if (!body) { return; }
    var tr = body.querySelector('tr[data-key="' + key + '"]');
    if (!tr) { tr = document.createElement("tr"); tr.setAttribute("data-key", key); body.appendChild(tr); }
    tr.textContent = "";
    cells.forEach(function (c) { var td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
  }
  function show(s) {
    if (campaign !== null) {
      var c = (s.campaigns || []).filter(function (x) { return String(x.id) === campaign; })[0];
      if (!c) { return; }
      put(document, "calls", c.calls);
      put(document, "leased", c.leased);
      put(document, "attempts", c.attempts_24h);
      put(document, "answer_rate", c.answer_rate);
      put(document, "abandon_24h", c.abandon_24h);
      put(document, "abandon_30d", c.abandon_30d);
      put(document, "cap", c.cap);
      put(document, "occupancy", c.occupancy);
      return;
    }
    put(document, "updated", s.updated);
    Object.keys(s.totals || {}).forEach(function (k) { put(document, k, s.totals[k]); });
    (s.campaigns || []).forEach(function (c) {
      row("live-campaigns", c.id, [c.name, c.state, c.calls, c.leased, c.attempts_24h, c.answer_rate, c.abandon_24h, c.abandon_30d, c.cap, c.occupancy]);
    });
    (s.appliances || []).forEach(function (a) {
      row("live-appliances", a.name, [a.name, a.status, a.calls, a.agents_ready, a.attempts_24h, a.answer_rate, a.occupancy]);
    });
  }
  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
    ws.onmessage = function (m) { try { show(JSON.parse(m.data)); } catch (e) { /* a bad frame is skipped */ } };
    ws.onclose = function () { setTimeout(connect, 2000); };
  }
  connect();
})();

// The agent page, kept live: the box pushes the agent's view as JSON over SSE
// (`/agent/events`, event `agent`); this script redraws the state, the screen-pop, the
// disposition codes and the call timer. All text goes in through textContent.
(function () {
  'use strict';
  const labels = {
    logged_out: 'Logged out', connecting: 'Connecting your phone', ready: 'Ready',
    reserved: 'Incoming call', talking: 'Talking', wrap_up: 'Wrap-up', paused: 'Paused'
  };
  const $ = (id) => document.getElementById(id);
  let view = null;
  let skew = 0; // box clock minus browser clock, ms

  function text(id, value) { $(id).textContent = value == null ? '' : value; }

  function draw(v) {
    view = v;
    const state = $('state');
    state.dataset.state = v.state;
    state.textContent = labels[v.state] || v.state;
    text('paused-reason', v.paused_reason ? '(' + v.paused_reason + ')' : '');
    const call = $('call');
    if (!v.call) { call.hidden = true; return; }
    call.hidden = false;
    const pop = v.call.pop;
    text('pop-source', pop.source);
    text('pop-customer', pop.customer);
    text('pop-number', pop.number);
    text('pop-script', pop.script);
    const fields = $('pop-fields');
    fields.replaceChildren();
    for (const [name, value] of pop.fields) {
      const dt = document.createElement('dt'); dt.textContent = name;
      const dd = document.createElement('dd'); dd.textContent = value;
      fields.append(dt, dd);
    }
    const select = $('disposition-code');
    const current = Array.from(select.options).map((o) => o.value).join('\n');
    if (current !== v.call.dispositions.join('\n')) {
      select.replaceChildren();
      for (const code of v.call.dispositions) {
        const o = document.createElement('option'); o.value = code; o.textContent = code;
        select.append(o);
      }
    }
    text('disposition-saved', v.call.disposition ? 'Saved: ' + v.call.disposition : '');
  }

  function tick() {
    const call = view && view.call;
    const since = call && call.talking_since_ms;
    const until = (call && call.talking_until_ms) || Date.now() + skew;
    const s = since ? Math.max(0, Math.floor((until - since) / 1000)) : 0;
    text('timer', Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0'));
  }

  const source = new EventSource('/agent/events');
  source.addEventListener('agent', function (e) {
    const v = JSON.parse(e.data);
    skew = v.now_ms - Date.now();
    if (v.state === 'logged_out') { window.location.assign('/agent/login?ended=1'); return; }
    draw(v);
    tick();
  });
  setInterval(tick, 1000);
})();

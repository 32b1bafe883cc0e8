// Live status: the server pushes a JSON object every few seconds over SSE; each key
// updates the element marked data-live="key"; a list replaces the rows of the table body
// marked data-live-rows="key" (cells in the order of its data-columns), or the options of
// the select marked data-live-options="key" (items {call, label}; the chosen one stays
// chosen while it is offered), and shows the elements marked data-live-when-empty="key"
// or data-live-when-any="key" as the list is empty or not.
(function () {
  function rows(body, list) {
    const columns = (body.dataset.columns || '').split(' ');
    body.replaceChildren();
    if (list.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = columns.length;
      td.textContent = body.dataset.empty || '';
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const item of list) {
      const tr = document.createElement('tr');
      for (const c of columns) {
        const td = document.createElement('td');
        td.textContent = item[c] === undefined ? '' : item[c];
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }
  function options(select, list) {
    const chosen = select.value;
    select.replaceChildren();
    for (const item of list) {
      const o = document.createElement('option');
      o.value = item.call;
      o.textContent = item.label;
      if (item.call === chosen) o.selected = true;
      select.appendChild(o);
    }
  }
  function shown(key, list) {
    for (const el of document.querySelectorAll('[data-live-when-empty="' + key + '"]')) {
      el.hidden = list.length !== 0;
    }
    for (const el of document.querySelectorAll('[data-live-when-any="' + key + '"]')) {
      el.hidden = list.length === 0;
    }
  }
  const source = new EventSource('/events');
  source.addEventListener('status', function (e) {
    const status = JSON.parse(e.data);
    for (const [key, value] of Object.entries(status)) {
      if (Array.isArray(value)) {
        const body = document.querySelector('[data-live-rows="' + key + '"]');
        if (body) rows(body, value);
        const select = document.querySelector('[data-live-options="' + key + '"]');
        if (select) options(select, value);
        shown(key, value);
        continue;
      }
      const el = document.querySelector('[data-live="' + key + '"]');
      if (el) el.textContent = value;
    }
  });
})();

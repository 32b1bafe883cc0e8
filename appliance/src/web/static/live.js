// Live status: the server pushes a JSON object every few seconds over SSE; each key
// updates the element marked data-live="key".
(function () {
  const source = new EventSource('/events');
  source.addEventListener('status', function (e) {
    const status = JSON.parse(e.data);
    for (const [key, value] of Object.entries(status)) {
      const el = document.querySelector('[data-live="' + key + '"]');
      if (el) el.textContent = value;
    }
  });
})();

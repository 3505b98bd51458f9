// The mailq dashboard page: polls the JSON API and redraws. Plain DOM and SVG, no libraries, so
// it runs from the package on a host with no internet. Everything from the API goes in as text
// (textContent), never as HTML: payloads and exception messages are data.

const csrf = document.querySelector('meta[name="mailq-csrf"]').content;
const refreshMs = Number(document.querySelector('meta[name="mailq-refresh-ms"]').content) || 2000;

const PAGE = 50;
const state = { selected: new Set(), detailId: null, failedIds: [], busy: false, limit: PAGE };

/** h('td', { class: 'n' }, 'text', childNode): an element with attributes and children. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child !== undefined && child !== null) element.append(child instanceof Node ? child : String(child));
  return element;
}

function svg(tag, attributes = {}) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? { headers: { accept: 'application/json' } } : {
    method: 'POST',
    headers: { 'content-type': 'application/json', [ 'x-mailq-csrf' ]: csrf },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

const number = (n) => Number(n).toLocaleString('en-US');
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '—');

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function bytes(n) {
  if (!n) return '—';
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** Completed (green) and failed (red, stacked on top) per minute over the hour, oldest on the left. */
function chart(series, minutes) {
  const width = 360, height = 46, top = 11, axis = 9;
  const step = width / Math.max(1, minutes.length);
  const peak = Math.max(1, ...series.completed.map((done, i) => done + (series.failed[i] ?? 0)));
  const base = height - axis;
  const scale = (v) => (v * (base - top)) / peak;
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  const total = (values) => values.reduce((a, b) => a + b, 0);
  const title = svg('title');
  title.textContent = `last hour: ${total(series.completed)} completed, ${total(series.failed)} failed; busiest minute ${peak}`;
  root.append(title);
  root.append(svg('line', { x1: 0, y1: base + 0.5, x2: width, y2: base + 0.5, class: 'axis' }));
  minutes.forEach((_, i) => {
    const done = series.completed[i] ?? 0;
    const failed = series.failed[i] ?? 0;
    const x = (i * step + 0.3).toFixed(1);
    const w = Math.max(1, step - 0.6).toFixed(1);
    if (done > 0) root.append(svg('rect', { x, y: base - scale(done), width: w, height: scale(done), class: 'ok' }));
    if (failed > 0) root.append(svg('rect', { x, y: base - scale(done + failed), width: w, height: scale(failed), class: 'bad' }));
  });
  const label = svg('text', { x: width, y: 8, 'text-anchor': 'end', class: 'peak' });
  label.textContent = `${number(total(series.completed))} done · ${number(total(series.failed))} failed · peak ${peak}/min`;
  root.append(label);
  for (const [text, x, anchor] of [[`${minutes.length} min ago`, 0, 'start'], ['now', width, 'end']]) {
    const tick = svg('text', { x, y: height - 1, 'text-anchor': anchor, class: 'peak' });
    tick.textContent = text;
    root.append(tick);
  }
  return root;
}

function progressBar(percent, failedPercent) {
  // Widths through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
  const fill = (share, extra) => {
    const element = h('div', { class: `fill ${extra}` });
    element.style.width = `${Math.max(0, Math.min(100, share))}%`;
    return element;
  };
  return h('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': percent + failedPercent, 'aria-valuemin': 0, 'aria-valuemax': 100 },
    fill(percent, ''), failedPercent > 0 ? fill(failedPercent, 'bad') : null);
}

function renderQueues(overview) {
  const rows = overview.queues.map((q) =>
    h('tr', { 'data-queue': q.queue },
      h('td', {}, q.queue, q.paused ? h('span', { class: 'badge warn', 'data-testid': 'paused-badge' }, 'paused') : null),
      h('td', { class: 'n', 'data-field': 'pending' }, number(q.pending)),
      h('td', { class: 'n', 'data-field': 'delayed' }, number(q.delayed)),
      h('td', { class: 'n', 'data-field': 'running' }, number(q.reserved)),
      h('td', { class: 'n', 'data-field': 'failed' }, number(q.failed)),
      h('td', { class: 'n', 'data-field': 'oldest' }, duration(q.oldestPendingSeconds)),
      h('td', {}, chart(overview.series[q.queue] ?? { completed: [], failed: [] }, overview.minutes)),
      h('td', { class: 'n' }, number(q.workers)),
      h('td', {}, h('button', {
        'data-testid': q.paused ? 'resume' : 'pause',
        onclick: () => act(() => api(`/api/queues/${q.paused ? 'resume' : 'pause'}`, { queue: q.queue }), `${q.paused ? 'Resumed' : 'Paused'} '${q.queue}'`),
      }, q.paused ? 'Resume' : 'Pause'))));
  replaceRows('queues', rows, 'No queue has seen a job yet.', 9);
}

function renderWorkers(overview) {
  const rows = [...overview.supervisors, ...overview.workers].map((w) =>
    h('tr', { class: w.alive ? '' : 'dead' },
      h('td', {}, w.kind), h('td', {}, w.host), h('td', { class: 'n' }, w.pid), h('td', {}, w.queues.join(', ')),
      h('td', { class: 'n' }, w.kind === 'worker' ? w.concurrency : '—'), h('td', { class: 'n' }, w.kind === 'worker' ? w.running : '—'),
      h('td', { class: 'n' }, number(w.jobsDone)), h('td', { class: 'n' }, bytes(w.memoryBytes)),
      h('td', {}, `${duration(w.silentMs / 1000)} ago`), h('td', {}, w.alive ? w.state : 'silent')));
  replaceRows('workers', rows, 'No worker is running.', 10);
}

function renderBatches(overview) {
  const box = document.getElementById('batches');
  box.replaceChildren(...(overview.batches.length === 0 ? [h('p', { class: 'muted' }, 'No batch yet.')] : overview.batches.map((b) =>
    h('div', { class: 'batch', 'data-batch': b.id },
      h('div', { class: 'row' }, h('strong', {}, b.name || b.id.slice(0, 8)), h('span', { class: `badge ${b.state}` }, b.state),
        h('span', { class: 'muted' }, `${number(b.processed)} / ${number(b.total)} · ${number(b.failed)} failed · ${b.progress}%`)),
      progressBar(b.progress - (b.total ? Math.floor((b.failed / b.total) * 100) : 0), b.total ? Math.floor((b.failed / b.total) * 100) : 0),
      b.reasons.length ? h('ul', { class: 'reasons' }, b.reasons.map((r) => h('li', {}, h('span', { class: 'count' }, number(r.count)), r.reason))) : null))));
  const select = document.getElementById('filter-batch');
  const chosen = select.value;
  select.replaceChildren(h('option', { value: '' }, 'all'), ...overview.batches.map((b) => h('option', { value: b.id, selected: b.id === chosen }, b.name || b.id.slice(0, 8))));
}

function renderRateLimits(overview) {
  const box = document.getElementById('rate-limits');
  box.replaceChildren(...(overview.rateLimits.length === 0 ? [h('p', { class: 'muted' }, 'No rate-limited job has run.')] : overview.rateLimits.map((r) =>
    h('div', { class: 'limit', 'data-key': r.key },
      h('div', { class: 'row' }, h('strong', {}, r.key),
        r.pausedUntil ? h('span', { class: 'badge bad', 'data-testid': 'limit-paused' }, `paused by 429 until ${time(r.pausedUntil)}`) : null,
        h('span', { class: 'muted' }, `${number(r.used)} / ${number(r.limit)} per ${duration(r.perMs / 1000)}${r.nextInMs > 0 ? ` · next token in ${duration(r.nextInMs / 1000)}` : ''}`)),
      progressBar(Math.min(100, Math.round((r.used / r.limit) * 100)), 0)))));
}

function renderQueueFilter(overview) {
  const select = document.getElementById('filter-queue');
  const chosen = select.value;
  select.replaceChildren(h('option', { value: '' }, 'all'), ...overview.queues.map((q) => h('option', { value: q.queue, selected: q.queue === chosen }, q.queue)));
}

function failedFilter() {
  return { queue: document.getElementById('filter-queue').value || undefined, batch: document.getElementById('filter-batch').value || undefined };
}

function renderFailed(list) {
  state.failedIds = list.jobs.map((job) => job.id);
  for (const id of state.selected) if (!state.failedIds.includes(id)) state.selected.delete(id);
  document.getElementById('failed-total').textContent = list.jobs.length < list.total ? `(newest ${number(list.jobs.length)} of ${number(list.total)})` : `(${number(list.total)})`;
  document.getElementById('show-more').hidden = list.jobs.length >= list.total || state.limit >= 500;
  document.getElementById('failed-reasons').replaceChildren(...list.reasons.map((r) => h('li', {}, h('span', { class: 'count' }, number(r.count)), r.reason)));
  const rows = list.jobs.map((job) =>
    h('tr', { 'data-id': job.id, class: job.id === state.detailId ? 'open' : '' },
      h('td', {}, h('input', { type: 'checkbox', checked: state.selected.has(job.id), 'aria-label': `select ${job.id}`, onchange: (event) => { event.target.checked ? state.selected.add(job.id) : state.selected.delete(job.id); updateButtons(); } })),
      h('td', { class: 'n' }, job.id), h('td', {}, job.queue), h('td', {}, job.name), h('td', { class: 'n' }, job.attempts),
      h('td', { class: 'reason' }, job.reason), h('td', {}, time(job.failedAt)),
      h('td', {}, h('button', { 'data-testid': 'show', onclick: () => showDetail(job.id) }, 'Show'))));
  replaceRows('failed', rows, 'No failed job.', 8);
  document.getElementById('select-all').checked = state.failedIds.length > 0 && state.failedIds.every((id) => state.selected.has(id));
  updateButtons();
}

function replaceRows(testid, rows, empty, columns) {
  const body = document.querySelector(`[data-testid="${testid}"] tbody`);
  body.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: columns, class: 'muted' }, empty))]));
}

function updateButtons() {
  document.getElementById('retry-selected').disabled = state.selected.size === 0;
  document.getElementById('forget-selected').disabled = state.selected.size === 0;
}

async function showDetail(id) {
  state.detailId = id;
  const box = document.getElementById('failed-detail');
  try {
    const job = await api(`/api/failed/${id}`);
    box.replaceChildren(
      h('div', { class: 'row' }, h('strong', {}, `Failed job ${job.id}: ${job.name} on '${job.queue}'`),
        h('button', { 'data-testid': 'detail-retry', onclick: () => act(() => api('/api/failed/retry', { ids: [job.id] }), `Retried job ${job.id}`).then(closeDetail) }, 'Retry'),
        h('button', { class: 'danger', 'data-testid': 'detail-forget', onclick: () => confirm(`Forget failed job ${job.id}?`) && act(() => api('/api/failed/forget', { ids: [job.id] }), `Forgot job ${job.id}`).then(closeDetail) }, 'Forget'),
        h('button', { onclick: closeDetail }, 'Close')),
      h('p', { class: 'muted' }, `uuid ${job.uuid} · ${job.attempts} attempt(s) · failed ${new Date(job.failedAt).toLocaleString()}${job.batchId ? ` · batch ${job.batchId}` : ''}`),
      h('h3', {}, 'Payload'), h('pre', { 'data-testid': 'detail-payload' }, JSON.stringify(job.payload, null, 2)),
      h('h3', {}, 'Exception'), h('pre', { 'data-testid': 'detail-exception' }, job.exception));
    box.hidden = false;
  } catch (error) {
    box.replaceChildren(h('p', { class: 'error' }, error.message));
    box.hidden = false;
  }
}

function closeDetail() {
  state.detailId = null;
  document.getElementById('failed-detail').hidden = true;
}

/** Runs an action, says how it went, and refreshes at once. */
async function act(action, done) {
  const result = document.getElementById('action-result');
  try {
    const answer = await action();
    const extra = answer && typeof answer.retried === 'number' ? ` (${answer.retried} retried${answer.alreadyQueued?.length ? `, ${answer.alreadyQueued.length} already queued` : ''})`
      : answer && typeof answer.forgotten === 'number' ? ` (${answer.forgotten} forgotten)` : '';
    result.textContent = `${done}${extra}`;
    result.className = 'ok';
  } catch (error) {
    result.textContent = error.message;
    result.className = 'error';
  }
  await refresh();
}

function selection(all) {
  return all ? { all: true, ...failedFilter() } : { ids: [...state.selected] };
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const connection = document.getElementById('connection');
  try {
    const overview = await api('/api/overview');
    renderQueues(overview);
    renderWorkers(overview);
    renderBatches(overview);
    renderRateLimits(overview);
    renderQueueFilter(overview);
    const params = new URLSearchParams(Object.entries({ ...failedFilter(), limit: state.limit }).filter(([, v]) => v));
    renderFailed(await api(`/api/failed?${params}`));
    document.getElementById('checked-at').textContent = `as of ${new Date(overview.checkedAt).toLocaleTimeString()} (database clock)`;
    connection.textContent = 'live';
    connection.className = 'badge ok';
  } catch (error) {
    connection.textContent = `not refreshing: ${error.message}`;
    connection.className = 'badge bad';
  } finally {
    state.busy = false;
  }
}

document.getElementById('filter-queue').addEventListener('change', () => { state.selected.clear(); state.limit = PAGE; refresh(); });
document.getElementById('filter-batch').addEventListener('change', () => { state.selected.clear(); state.limit = PAGE; refresh(); });
document.getElementById('show-more').addEventListener('click', () => { state.limit = Math.min(500, state.limit + PAGE); refresh(); });
document.getElementById('select-all').addEventListener('change', (event) => {
  for (const id of state.failedIds) event.target.checked ? state.selected.add(id) : state.selected.delete(id);
  for (const box of document.querySelectorAll('[data-testid="failed"] tbody input[type="checkbox"]')) box.checked = event.target.checked;
  updateButtons();
});
document.getElementById('retry-selected').addEventListener('click', () => act(() => api('/api/failed/retry', selection(false)), `Retried ${state.selected.size} selected`).then(() => state.selected.clear()));
document.getElementById('forget-selected').addEventListener('click', () => confirm(`Forget ${state.selected.size} failed job(s)?`) && act(() => api('/api/failed/forget', selection(false)), 'Forgot the selected').then(() => state.selected.clear()));
document.getElementById('retry-all').addEventListener('click', () => confirm('Retry every failed job matching the filter (not only those listed)?') && act(() => api('/api/failed/retry', selection(true)), 'Retried all'));
document.getElementById('forget-all').addEventListener('click', () => confirm('Forget every failed job matching the filter (not only those listed)?') && act(() => api('/api/failed/forget', selection(true)), 'Forgot all'));

refresh();
setInterval(refresh, refreshMs);
